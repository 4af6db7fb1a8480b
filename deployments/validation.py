"""Validation stage: body size and magic bytes, before anything decodes a byte.

:class:`ImageValidator` is the plain core (no Ray needed); :class:`Validation` is the Ray Serve
deployment that wraps it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from ray import serve

from serve_app.errors import EmptyBody, PayloadTooLarge, UnsupportedMediaType
from serve_app.settings import get_settings

logger = logging.getLogger("ray.serve")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Prefix formats, checked after WebP. Each signature must be present in full.
_PREFIX_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpeg"),
    (_PNG_SIGNATURE, "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
)
SUPPORTED_FORMATS = ("jpeg", "png", "gif", "webp")


@dataclass(frozen=True)
class ValidatedImage:
    """What the validator learned about an accepted body."""

    format: str
    sha256: str
    num_bytes: int


class ImageValidator:
    """Accepts JPEG, PNG, GIF and WebP by their bytes, never by a client's Content-Type."""

    def __init__(self, max_upload_bytes: int | None = None) -> None:
        self.max_upload_bytes = max_upload_bytes

    @staticmethod
    def validate_magic_bytes(data: bytes) -> tuple[bool, str | None]:
        """Return ``(True, fmt)`` for a recognised image signature, else ``(False, None)``.

        WebP is checked first and needs both ``RIFF`` at bytes 0..3 and ``WEBP`` at 8..11, so
        AVI, WAV and other RIFF containers are refused.
        """
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return True, "webp"
        for signature, fmt in _PREFIX_SIGNATURES:
            if data[: len(signature)] == signature:
                return True, fmt
        return False, None

    def validate(self, data: bytes) -> ValidatedImage:
        """Check size and signature; raise a typed error for anything not acceptable."""
        if not data:
            raise EmptyBody("request body is empty; send the image bytes")
        if self.max_upload_bytes is not None and len(data) > self.max_upload_bytes:
            raise PayloadTooLarge(
                f"body is {len(data)} bytes; the limit is {self.max_upload_bytes} bytes"
            )
        ok, fmt = self.validate_magic_bytes(data)
        if not ok:
            raise UnsupportedMediaType(
                "content is not a JPEG, PNG, GIF or WebP image (checked by its bytes)"
            )
        return ValidatedImage(format=fmt, sha256=hashlib.sha256(data).hexdigest(), num_bytes=len(data))


@serve.deployment(name="Validation")
class Validation:
    def __init__(self) -> None:
        self._validator = ImageValidator(get_settings().max_upload_bytes)

    def validate(self, data: bytes, request_id: str) -> ValidatedImage:
        validated = self._validator.validate(data)
        logger.debug("request %s: %s, %d bytes", request_id, validated.format, validated.num_bytes)
        return validated

    def ready(self) -> bool:
        return True
