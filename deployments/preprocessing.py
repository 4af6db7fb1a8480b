"""Preprocessing stage: safe decoding with Pillow, then crop and resize to the model's input.

:class:`ImageDecoder` is the plain core; :class:`Preprocessing` is the Ray Serve deployment that
wraps it. The output is a compact uint8 HxWx3 array; normalisation to float happens in the model
replica, so four times fewer bytes cross between the two.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image, ImageOps
from ray import serve

from common.console import show_on_console
from common.contracts import DecodedImage, InputGeometry
from common.error_tracking import init_error_tracking, reports_unexpected_errors
from common.errors import DecodeTimeout, ImageTooLarge, ServiceError, UndecodableImage
from common.image_header import check_dimensions
from common.metrics import DecodedSizeHistogram, StageTimer
from common.self_test import self_test_png
from common.settings import get_settings

logger = logging.getLogger("ray.serve")

PILLOW_FORMATS = {"jpeg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WEBP"}
# Transparent pixels are composited onto this colour, so a logo on a transparent background
# classifies the same whatever colour its hidden pixels happen to hold.
BACKGROUND_RGB = (255, 255, 255)
# Pillow's messages can embed object reprs ("<_io.BytesIO object at 0x...>"); clients get neither.
_OBJECT_REPR = re.compile(r"\s*<[^<>]*object at 0x[0-9a-f]+>")
_EXIF_ORIENTATION = 0x0112
_ORIENTATIONS_SWAPPING_SIDES = {5, 6, 7, 8}


class ImageDecoder:
    """Decodes untrusted bytes safely. Truncated data is an error: LOAD_TRUNCATED_IMAGES stays off.

    Pillow's own decompression-bomb threshold is aligned with ``max_pixels`` (it is a process-wide
    constant, set once here, not a per-call warning filter that concurrent decodes would race on).
    Dimensions are checked before Pillow decodes a pixel, so its warning cannot fire for an image
    we accept, and its error for a larger one becomes our ``image_too_large``.
    """

    def __init__(self, geometry: InputGeometry, max_pixels: int, max_side: int) -> None:
        self.geometry = geometry
        self.max_pixels = max_pixels
        self.max_side = max_side
        Image.MAX_IMAGE_PIXELS = max_pixels

    def decode(self, data: bytes, fmt: str, geometry: InputGeometry | None = None) -> DecodedImage:
        """Decode validated bytes of format ``fmt`` for a model of ``geometry`` (default: the
        decoder's own); raise a typed 422 error if they do not decode."""
        geometry = geometry or self.geometry
        try:
            if fmt == "png":
                # Checks every chunk's CRC (image data included) without decoding pixels; Pillow's
                # decoder alone would accept corrupted image data.
                with Image.open(io.BytesIO(data), formats=["PNG"]) as probe:
                    probe.verify()
            with Image.open(io.BytesIO(data), formats=[PILLOW_FORMATS[fmt]]) as image:
                check_dimensions(*image.size, self.max_side, self.max_pixels)
                width, height = image.size
                if image.getexif().get(_EXIF_ORIENTATION) in _ORIENTATIONS_SWAPPING_SIDES:
                    width, height = height, width
                # JPEG can decode straight at 1/2, 1/4 or 1/8 scale while staying at least as
                # large as what the crop needs: far less work for big photos.
                short_side_needed = round(geometry.size / geometry.crop_fraction)
                image.draft(None, (short_side_needed, short_side_needed))
                image = ImageOps.exif_transpose(image)
                rgb = to_rgb(image)
                pixels = _crop_and_resize(rgb, geometry)
        except ServiceError:
            raise
        except Image.DecompressionBombError as exc:
            raise ImageTooLarge(str(exc)) from None
        except Exception as exc:  # Pillow reports corrupt data through many exception types.
            reason = _OBJECT_REPR.sub("", str(exc)).strip() or type(exc).__name__
            raise UndecodableImage(f"{fmt} image could not be decoded: {reason}") from None
        return DecodedImage(pixels=pixels, width=width, height=height, format=fmt)


def _crop_and_resize(image: Image.Image, geometry: InputGeometry) -> np.ndarray:
    """Centre-crop ``crop_fraction`` of the shorter side and resize it to the model's square."""
    width, height = image.size
    side = max(1.0, min(width, height) * geometry.crop_fraction)
    left, top = (width - side) / 2, (height - side) / 2
    size = geometry.size
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


class BudgetedDecoder:
    """Runs decodes on a small thread pool and stops waiting after ``timeout_s``.

    A thread cannot be killed, so a decode past its budget finishes in the background; the request
    gets ``decode_timeout`` at once and the pool's fixed size bounds how much such work can pile up.
    The pixel limits bound how long any single decode can take.
    """

    def __init__(self, decoder: ImageDecoder, timeout_s: float, threads: int = 2) -> None:
        self.decoder = decoder
        self.timeout_s = timeout_s
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode")

    async def decode(self, data: bytes, fmt: str, geometry: InputGeometry | None = None) -> DecodedImage:
        future = asyncio.get_running_loop().run_in_executor(self._pool, self.decoder.decode, data, fmt, geometry)
        try:
            return await asyncio.wait_for(future, self.timeout_s)
        except asyncio.TimeoutError:
            raise DecodeTimeout(
                f"decoding took longer than the {self.timeout_s:g} s budget"
            ) from None


@serve.deployment(name="Preprocessing")
class Preprocessing:
    def __init__(self, geometry: InputGeometry) -> None:
        """``geometry`` is the default model's input, bound when the graph is built
        (serve_app/app.py); a call for another model passes that model's, and every call names
        its model for the log."""
        show_on_console()
        settings = get_settings()
        init_error_tracking(settings)
        decoder = ImageDecoder(geometry, settings.max_image_pixels, settings.max_image_side)
        self._decoder = BudgetedDecoder(decoder, settings.decode_timeout_s)
        self._timer = StageTimer("preprocess")
        self._decoded_size = DecodedSizeHistogram()
        self.check_health()

    @reports_unexpected_errors
    async def preprocess(self, data: bytes, fmt: str, request_id: str, model: str,
                         geometry: InputGeometry | None = None) -> DecodedImage:
        with self._timer.time():
            decoded = await self._decoder.decode(data, fmt, geometry)
        self._decoded_size.observe(decoded.width, decoded.height)
        size = (geometry or self._decoder.decoder.geometry).size
        logger.info("request %s: model %s, decoded %dx%d for a %dx%d input", request_id, model, decoded.width,
                    decoded.height, size, size)
        return decoded

    def ready(self) -> bool:
        self.check_health()
        return True

    def check_health(self) -> None:
        """Serve restarts the replica if this raises: decoding a known-good image must work."""
        decoder = self._decoder.decoder
        decoded = decoder.decode(self_test_png(), "png")
        if decoded.pixels.shape != (decoder.geometry.size, decoder.geometry.size, 3):
            raise RuntimeError(f"decoder self-test produced shape {decoded.pixels.shape}")
