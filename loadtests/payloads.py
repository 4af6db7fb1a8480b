"""Image payloads for load tools: photo-based, deterministic, and unique per request on demand."""

from __future__ import annotations

import io
import struct
from pathlib import Path

from PIL import Image


def sample_photo() -> Image.Image:
    import matplotlib

    return Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("RGB")


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    (image.quantize(256) if fmt == "GIF" else image).save(buffer, fmt, **params)
    return buffer.getvalue()


def make_unique(fmt: str, data: bytes, salt: bytes) -> bytes:
    """The same image with a new content hash: decoders ignore what follows the image's end, and
    a WebP reader skips an unknown RIFF chunk once the RIFF size counts it."""
    if fmt.upper() != "WEBP":
        return data + salt
    chunk = b"SALT" + struct.pack("<I", len(salt)) + salt
    return b"RIFF" + struct.pack("<I", len(data) - 8 + len(chunk)) + data[8:] + chunk
