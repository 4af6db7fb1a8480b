"""Preprocessing stage: safe decoding with Pillow, then crop and resize to the model's input.

:class:`ImageDecoder` is the plain core; :class:`Preprocessing` is the Ray Serve deployment that
wraps it. The output is a compact uint8 HxWx3 array; normalisation to float happens in the model
replica, so four times fewer bytes cross between the two.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps
from ray import serve

from deployments.inference.spec import InputGeometry, model_spec_from_settings
from serve_app.errors import ImageTooLarge, InvalidImageDimensions, ServiceError, UndecodableImage
from serve_app.settings import get_settings

logger = logging.getLogger("ray.serve")

PILLOW_FORMATS = {"jpeg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WEBP"}
# Transparent pixels are composited onto this colour, so a logo on a transparent background
# classifies the same whatever colour its hidden pixels happen to hold.
BACKGROUND_RGB = (255, 255, 255)
_EXIF_ORIENTATION = 0x0112
_ORIENTATIONS_SWAPPING_SIDES = {5, 6, 7, 8}


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image, cropped and resized for the model, with its original dimensions."""

    pixels: np.ndarray  # uint8, (size, size, 3)
    width: int  # as displayed, after the EXIF orientation
    height: int


class ImageDecoder:
    def __init__(self, geometry: InputGeometry, max_pixels: int, max_side: int) -> None:
        self.geometry = geometry
        self.max_pixels = max_pixels
        self.max_side = max_side

    def decode(self, data: bytes, fmt: str) -> DecodedImage:
        """Decode validated bytes of format ``fmt``; raise a typed 422 error if they do not decode."""
        try:
            with Image.open(io.BytesIO(data), formats=[PILLOW_FORMATS[fmt]]) as image:
                self._check_dimensions(image.size)
                width, height = image.size
                if image.getexif().get(_EXIF_ORIENTATION) in _ORIENTATIONS_SWAPPING_SIDES:
                    width, height = height, width
                # JPEG can decode straight at 1/2, 1/4 or 1/8 scale while staying at least as
                # large as what the crop needs: far less work for big photos.
                short_side_needed = round(self.geometry.size / self.geometry.crop_fraction)
                image.draft(None, (short_side_needed, short_side_needed))
                image = ImageOps.exif_transpose(image)
                rgb = to_rgb(image)
                pixels = self._crop_and_resize(rgb)
        except ServiceError:
            raise
        except Exception as exc:  # Pillow reports corrupt data through many exception types.
            raise UndecodableImage(f"{fmt} image could not be decoded: {exc}") from None
        return DecodedImage(pixels=pixels, width=width, height=height)

    def _check_dimensions(self, size: tuple[int, int]) -> None:
        width, height = size
        if width <= 0 or height <= 0:
            raise InvalidImageDimensions(f"image declares {width}x{height} pixels")
        if max(width, height) > self.max_side:
            raise ImageTooLarge(
                f"image is {width}x{height}; the longest side allowed is {self.max_side} pixels"
            )
        if width * height > self.max_pixels:
            raise ImageTooLarge(
                f"image is {width}x{height} = {width * height} pixels; the limit is {self.max_pixels}"
            )

    def _crop_and_resize(self, image: Image.Image) -> np.ndarray:
        """Centre-crop ``crop_fraction`` of the shorter side and resize it to the model's square."""
        width, height = image.size
        side = max(1.0, min(width, height) * self.geometry.crop_fraction)
        left, top = (width - side) / 2, (height - side) / 2
        size = self.geometry.size
        resized = image.resize(
            (size, size), Image.Resampling.BICUBIC, box=(left, top, left + side, top + side)
        )
        return np.asarray(resized, dtype=np.uint8)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any mode the four formats produce to 8-bit RGB without losing its look."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grey: scale 0..65535 down to 0..255. Pillow's own convert() clips, which turns
        # most 16-bit images white.
        grey = np.clip(np.asarray(image).astype(np.int64), 0, 65535) // 257
        return Image.fromarray(grey.astype(np.uint8), mode="L").convert("RGB")
    if mode == "CMYK":
        return image.convert("RGB")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or (
        mode == "P" and "transparency" in image.info
    ):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, BACKGROUND_RGB + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def self_test_image() -> bytes:
    """A small PNG the decoder must always handle; health checks decode it."""
    buffer = io.BytesIO()
    Image.new("RGBA", (48, 32), (200, 40, 10, 255)).save(buffer, "PNG")
    return buffer.getvalue()


@serve.deployment(name="Preprocessing")
class Preprocessing:
    def __init__(self) -> None:
        settings = get_settings()
        geometry = model_spec_from_settings(settings).geometry
        self._decoder = ImageDecoder(geometry, settings.max_image_pixels, settings.max_image_side)
        self._self_test_png = self_test_image()
        self.check_health()

    def preprocess(self, data: bytes, fmt: str, request_id: str) -> DecodedImage:
        decoded = self._decoder.decode(data, fmt)
        logger.debug("request %s: decoded %dx%d", request_id, decoded.width, decoded.height)
        return decoded

    def ready(self) -> bool:
        self.check_health()
        return True

    def check_health(self) -> None:
        """Serve restarts the replica if this raises: decoding a known-good image must work."""
        decoded = self._decoder.decode(self._self_test_png, "png")
        if decoded.pixels.shape != (self._decoder.geometry.size, self._decoder.geometry.size, 3):
            raise RuntimeError(f"decoder self-test produced shape {decoded.pixels.shape}")
