"""Test-only inputs, generated in code: no binary fixtures. Photos come from loadtests.payloads."""

from __future__ import annotations

# Labels a sound ImageNet classifier puts in the top five for the sample photo (Grace Hopper).
PHOTO_PLAUSIBLE_LABELS = {"military uniform", "academic gown", "mortarboard", "suit", "Windsor tie", "bow tie"}


def riff(fourcc: bytes, payload: bytes = b"\x00" * 16) -> bytes:
    """A RIFF container of type ``fourcc`` (b'WEBP', b'AVI ', b'WAVE', ...)."""
    body = fourcc + payload
    return b"RIFF" + len(body).to_bytes(4, "little") + body
