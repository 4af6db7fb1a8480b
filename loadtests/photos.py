"""The photo the load tools send, in several formats and sizes, and copies of it that the
service's cache has never seen."""

from __future__ import annotations

import io
import os
import random
import struct
from pathlib import Path

import matplotlib
from PIL import Image

# A real photograph (Grace Hopper in uniform) that matplotlib ships as sample data.
PHOTO_PATH = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def sample_photo() -> Image.Image:
    return Image.open(PHOTO_PATH).convert("RGB")


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    (image.quantize(256) if fmt == "GIF" and image.mode != "P" else image).save(buffer, fmt, **params)
    return buffer.getvalue()


def make_unique(fmt: str, data: bytes, salt: bytes) -> bytes:
    """The same image with a new content hash: decoders ignore what follows the image's end, and
    a WebP reader skips an unknown RIFF chunk once the RIFF size counts it."""
    if fmt.upper() != "WEBP":
        return data + salt
    chunk = b"SALT" + struct.pack("<I", len(salt)) + salt
    return b"RIFF" + struct.pack("<I", len(data) - 8 + len(chunk)) + data[8:] + chunk


def rotated_jpegs(count: int, size: tuple[int, int], quality: int) -> list[bytes]:
    """``count`` JPEGs of the photo at ``size``, each rotated by one more degree, so that the model
    sees different pixels."""
    base = sample_photo().resize(size, Image.Resampling.BICUBIC)
    return [encode(base.rotate(degrees), "JPEG", quality=quality) for degrees in range(count)]


class DistinctJpegs:
    """A new 640x480 photo JPEG (about 100 KB) at each call, so that no cache ever answers."""

    def __init__(self, seed: int = 7) -> None:
        self._images = rotated_jpegs(8, (640, 480), quality=92)
        self._rng = random.Random(seed)

    def __call__(self) -> bytes:
        return make_unique("JPEG", self._rng.choice(self._images), os.urandom(16))
