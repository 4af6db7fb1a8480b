"""Test images, generated in code: no binary fixtures."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
from PIL import Image

# A real photograph (Grace Hopper in uniform) that matplotlib ships as sample data.
PHOTO_PATH = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
# Labels a sound ImageNet classifier puts in the top five for that photo.
PHOTO_PLAUSIBLE_LABELS = {"military uniform", "academic gown", "mortarboard", "suit", "Windsor tie", "bow tie"}


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def solid(mode: str, size: tuple[int, int], color) -> Image.Image:
    return Image.new(mode, size, color)


def photo(size: tuple[int, int] | None = None) -> Image.Image:
    image = Image.open(PHOTO_PATH).convert("RGB")
    return image.resize(size, Image.Resampling.BICUBIC) if size else image


def photo_bytes(fmt: str = "JPEG", size: tuple[int, int] | None = None, **params) -> bytes:
    image = photo(size)
    if fmt == "GIF":
        image = image.quantize(256)
    return encode(image, fmt, **params)


def riff(fourcc: bytes, payload: bytes = b"\x00" * 16) -> bytes:
    """A RIFF container of type ``fourcc`` (b'WEBP', b'AVI ', b'WAVE', ...)."""
    body = fourcc + payload
    return b"RIFF" + len(body).to_bytes(4, "little") + body
