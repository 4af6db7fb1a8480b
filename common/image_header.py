"""Declared image dimensions, read from the header bytes without decoding any pixels.

Validation uses them to refuse oversized images before a decoder allocates anything; the decoder
checks Pillow's view of the size again with the same :func:`check_dimensions`.
"""

from __future__ import annotations

from common.errors import ImageTooLarge, InvalidImageDimensions, UndecodableImage

# Start-of-frame markers that carry the frame size (not DHT C4, JPG C8 or DAC CC).
_JPEG_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# Markers without a length field.
_JPEG_STANDALONE_MARKERS = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})


def _le(data: bytes, start: int, size: int) -> int:
    return int.from_bytes(data[start : start + size], "little")


def _be(data: bytes, start: int, size: int) -> int:
    return int.from_bytes(data[start : start + size], "big")


def _jpeg(data: bytes) -> tuple[int, int]:
    i, end = 2, len(data)
    while i < end:
        if data[i] != 0xFF:
            raise UndecodableImage(f"JPEG marker expected at byte {i}")
        while i < end and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= end:
            break
        marker = data[i]
        i += 1
        if marker in _JPEG_STANDALONE_MARKERS:
            continue
        if marker in (0xD9, 0xDA):  # end of image, or scan data, before any frame header
            break
        if i + 2 > end:
            break
        length = _be(data, i, 2)
        if length < 2:
            raise UndecodableImage(f"JPEG segment at byte {i} has length {length}")
        if marker in _JPEG_SOF_MARKERS:
            if i + 7 > end:
                break
            return _be(data, i + 5, 2), _be(data, i + 3, 2)
        i += length
    raise UndecodableImage("JPEG has no frame header before its image data")


def _png(data: bytes) -> tuple[int, int]:
    if len(data) < 24 or data[12:16] != b"IHDR" or _be(data, 8, 4) != 13:
        raise UndecodableImage("PNG does not start with a valid IHDR chunk")
    return _be(data, 16, 4), _be(data, 20, 4)


def _gif(data: bytes) -> tuple[int, int]:
    if len(data) < 10:
        raise UndecodableImage("GIF is shorter than its logical screen descriptor")
    return _le(data, 6, 2), _le(data, 8, 2)


def _webp(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        return 1 + _le(data, 24, 3), 1 + _le(data, 27, 3)
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = _le(data, 21, 4)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        return _le(data, 26, 2) & 0x3FFF, _le(data, 28, 2) & 0x3FFF
    raise UndecodableImage(f"WebP {chunk.decode('latin-1')!r} chunk has no valid frame header")


_READERS = {"jpeg": _jpeg, "png": _png, "gif": _gif, "webp": _webp}


def declared_dimensions(data: bytes, fmt: str) -> tuple[int, int]:
    """(width, height) as the header of a ``fmt`` image declares them."""
    return _READERS[fmt](data)


def check_dimensions(width: int, height: int, max_side: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise InvalidImageDimensions(f"image declares {width}x{height} pixels")
    if max(width, height) > max_side:
        raise ImageTooLarge(f"image is {width}x{height}; the longest side allowed is {max_side} pixels")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
