"""Validation stage: body size, magic bytes and declared dimensions, before anything decodes a byte.

:class:`ImageValidator` is the plain core (no Ray needed); :class:`Validation` is the Ray Serve
deployment that wraps it.
"""

from __future__ import annotations

import logging

from ray import serve

from common.console import show_on_console
from common.contracts import ValidatedImage
from common.error_tracking import init_error_tracking, reports_unexpected_errors
from common.errors import (
    EmptyBody,
    PayloadTooLarge,
    UndecodableImage,
    UnsupportedMediaType,
)
from common.image_header import check_dimensions, declared_dimensions
from common.metrics import StageTimer
from common.self_test import self_test_png
from common.settings import Settings, get_settings

logger = logging.getLogger("ray.serve")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Prefix formats, checked after WebP. Each signature must be present in full.
_PREFIX_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "jpeg"),
    (_PNG_SIGNATURE, "png"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
)
_WEBP_FIRST_CHUNKS = (b"VP8 ", b"VP8L", b"VP8X")


class ImageValidator:
    """Accepts JPEG, PNG, GIF and WebP by their bytes, never by a client's Content-Type.

    Without arguments it checks signatures only; give it the limits to enforce them too.
    """

    def __init__(
        self,
        max_upload_bytes: int | None = None,
        max_image_side: int | None = None,
        max_image_pixels: int | None = None,
    ) -> None:
        self.max_upload_bytes = max_upload_bytes
        self.max_image_side = max_image_side
        self.max_image_pixels = max_image_pixels

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageValidator:
        return cls(settings.max_upload_bytes, settings.max_image_side, settings.max_image_pixels)

    @staticmethod
    def validate_magic_bytes(data: bytes) -> tuple[bool, str | None]:
        """Return ``(True, fmt)`` for a recognised image signature, else ``(False, None)``.

        WebP is checked first and needs ``RIFF`` at bytes 0..3, ``WEBP`` at 8..11 and a VP8, VP8L
        or VP8X chunk at 12..15, so AVI, WAV and other RIFF containers are refused.
        """
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP" and data[12:16] in _WEBP_FIRST_CHUNKS:
            return True, "webp"
        for signature, fmt in _PREFIX_SIGNATURES:
            if data[: len(signature)] == signature:
                return True, fmt
        return False, None

    def validate(self, data: bytes) -> ValidatedImage:
        """Check size and signature; raise a typed error for anything not acceptable."""
        if not data:
            raise EmptyBody("request body is empty; send the image bytes or a multipart 'file'")
        if self.max_upload_bytes is not None and len(data) > self.max_upload_bytes:
            raise PayloadTooLarge(
                f"body is {len(data)} bytes; the limit is {self.max_upload_bytes} bytes"
            )
        ok, fmt = self.validate_magic_bytes(data)
        if not ok:
            raise UnsupportedMediaType(
                "content is not a JPEG, PNG, GIF or WebP image (checked by its bytes)"
            )
        if fmt == "webp":
            # A WebP is a RIFF container: the signature says it is one, so a size that disagrees
            # with the body is a truncated or broken WebP (422, like a truncated JPEG), not 415.
            riff_size = int.from_bytes(data[4:8], "little")
            if riff_size + 8 != len(data):
                raise UndecodableImage(
                    f"WebP RIFF header declares {riff_size + 8} bytes but the body has {len(data)}"
                )
        width, height = declared_dimensions(data, fmt)
        if self.max_image_side is not None and self.max_image_pixels is not None:
            check_dimensions(width, height, self.max_image_side, self.max_image_pixels)
        return ValidatedImage(format=fmt, num_bytes=len(data), width=width, height=height)


@serve.deployment(name="Validation")
class Validation:
    def __init__(self) -> None:
        show_on_console()
        settings = get_settings()
        init_error_tracking(settings)
        self._validator = ImageValidator.from_settings(settings)
        self._timer = StageTimer("validation")

    # Async although nothing in it awaits: the checks take microseconds, and Serve would hand a
    # sync method to a worker thread and back on every request, which costs more than they do.
    @reports_unexpected_errors
    async def validate(self, data: bytes, request_id: str, model: str) -> ValidatedImage:
        """``model``, the model the request is for, is only logged: the checks are the same for all."""
        with self._timer.time():
            validated = self._validator.validate(data)
        logger.info(
            "request %s: model %s, %s %dx%d, %d bytes",
            request_id, model, validated.format, validated.width, validated.height, validated.num_bytes,
        )
        return validated

    def ready(self) -> bool:
        self.check_health()
        return True

    def check_health(self) -> None:
        """Serve restarts the replica if this raises: a known-good PNG must validate."""
        validated = self._validator.validate(self_test_png())
        if (validated.format, validated.width, validated.height) != ("png", 48, 32):
            raise RuntimeError(f"validator self-test returned {validated}")
