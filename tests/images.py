"""Test-only inputs, generated in code: no binary fixtures. The photographs are the ones that
matplotlib and scikit-image ship, so no download is needed."""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import matplotlib
from PIL import Image

# A real photograph (Grace Hopper in uniform) that matplotlib ships as sample data.
PHOTO_PATH = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
# Labels a sound ImageNet classifier puts in the top five for the sample photo (Grace Hopper).
PHOTO_PLAUSIBLE_LABELS = {"military uniform", "academic gown", "mortarboard", "suit", "Windsor tie", "bow tie"}


def riff(fourcc: bytes, payload: bytes = b"\x00" * 16) -> bytes:
    """A RIFF container of type ``fourcc`` (b'WEBP', b'AVI ', b'WAVE', ...)."""
    body = fourcc + payload
    return b"RIFF" + len(body).to_bytes(4, "little") + body


def sample_photo(size: tuple[int, int] | None = None) -> Image.Image:
    image = Image.open(PHOTO_PATH).convert("RGB")
    return image.resize(size, Image.Resampling.BICUBIC) if size else image


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    (image.quantize(256) if fmt == "GIF" and image.mode != "P" else image).save(buffer, fmt, **params)
    return buffer.getvalue()


def photo_bytes(fmt: str = "JPEG", size: tuple[int, int] | None = None, **params) -> bytes:
    return encode(sample_photo(size), fmt, **params)


def make_unique(fmt: str, data: bytes, salt: bytes) -> bytes:
    """The same image with a new content hash: decoders ignore what follows the image's end, and
    a WebP reader skips an unknown RIFF chunk once the RIFF size counts it."""
    if fmt.upper() != "WEBP":
        return data + salt
    chunk = b"SALT" + struct.pack("<I", len(salt)) + salt
    return b"RIFF" + struct.pack("<I", len(data) - 8 + len(chunk)) + data[8:] + chunk


def unique_photo_bytes(fmt: str = "JPEG", size: tuple[int, int] = (320, 240)) -> bytes:
    """The photo as no request has sent it before: same pixels, a content hash of its own."""
    return make_unique(fmt, photo_bytes(fmt, size), os.urandom(16))


def distinct_photos(count: int, size: tuple[int, int] = (640, 480), salt: bytes = b"", **params) -> list[bytes]:
    """``count`` JPEGs of the photo, each with its own content hash; the first 360 also differ in
    their pixels (rotated), so the model sees different images. A new ``salt`` gives a new set."""
    base = sample_photo(size)
    return [
        make_unique("JPEG", encode(base.rotate(i % 360), "JPEG", **params), salt + i.to_bytes(4, "big"))
        for i in range(count)
    ]


# Real photographs that scikit-image ships; its diagrams, text and synthetic images are left out.
SKIMAGE_PHOTOS = (
    "astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png", "coffee.png",
    "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg", "ihc.png", "microaneurysms.png", "moon.png",
    "motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "rocket.jpg",
)


def shipped_photos() -> dict[str, bytes]:
    """Every real photograph the installed packages ship (scikit-image's and matplotlib's), as
    their original file bytes, by file name."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    photos = {name: (folder / name).read_bytes() for name in SKIMAGE_PHOTOS}
    return {**photos, PHOTO_PATH.name: PHOTO_PATH.read_bytes()}
