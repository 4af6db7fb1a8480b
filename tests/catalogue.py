"""A catalogue of crafted uploads, each built here from bytes or Pillow, with the answer it must get.

Used by the HTTP catalogue test, and as seeds by the property test and the fuzz harness.
"""

from __future__ import annotations

import gzip
import io
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import Image

from tests.images import encode, riff, sample_photo


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[], bytes]
    status: int
    code: str | None = None  # error code; None for 200
    headers: dict = field(default_factory=dict)
    format: str | None = None  # detected format, for 200 cases


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_ihdr(width: int, height: int, bit_depth: int = 8, colour_type: int = 2) -> bytes:
    return png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0))


def png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares the size but whose image data is a few bytes."""
    idat = png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
    return PNG_SIGNATURE + png_ihdr(width, height) + idat + png_chunk(b"IEND", b"")


def png_with_chunk_before_idat(kind: bytes, payload: bytes) -> bytes:
    """A valid small PNG with an extra chunk inserted right after IHDR."""
    data = encode(Image.new("RGB", (16, 16), (20, 120, 200)), "PNG")
    ihdr_end = 8 + 25
    return data[:ihdr_end] + png_chunk(kind, payload) + data[ihdr_end:]


def png_bad_idat_crc() -> bytes:
    data = bytearray(encode(sample_photo((64, 48)), "PNG"))
    idat = data.index(b"IDAT")
    length = struct.unpack(">I", data[idat - 4 : idat])[0]
    data[idat + 4 + length] ^= 0xFF  # first byte of the IDAT CRC
    return bytes(data)


def jpeg_with_sof(width: int, height: int) -> bytes:
    """SOI, a baseline SOF0 declaring the size, then EOI: no image data at all."""
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + sof + b"\xff\xd9"


def gif_declaring(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00" + b";"


def webp_vp8x_declaring(width: int, height: int) -> bytes:
    """An extended WebP whose VP8X chunk declares the canvas size, with no image chunk."""
    vp8x = b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return riff(b"WEBP", b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x)


def webp(image: Image.Image, **params) -> bytes:
    return encode(image, "WEBP", **params)


def with_exif_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", exif=exif.tobytes(), quality=90)


def animated(fmt: str) -> bytes:
    frames = [Image.new("RGB", (64, 48), c) for c in ((250, 0, 0), (0, 250, 0), (0, 0, 250))]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=40, loop=0)


def zip_bytes() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("a.txt", "hello")
    return buffer.getvalue()


def truncated(data: bytes, fraction: float = 0.5) -> bytes:
    return data[: int(len(data) * fraction)]


def small_photo(fmt: str, **params) -> bytes:
    image = sample_photo((96, 72))
    return encode(image.quantize(256) if fmt == "GIF" else image, fmt, **params)


OCTET = {"Content-Type": "application/octet-stream"}
_5_MIB_OF_ZEROS = zlib.compress(b"\x00" * (5 * 1024 * 1024), 9)

CASES: list[Case] = [
    # --- valid, and odd but valid: 200 -----------------------------------------------------
    Case("jpeg photo", lambda: small_photo("JPEG"), 200, format="jpeg"),
    Case("progressive jpeg", lambda: small_photo("JPEG", progressive=True), 200, format="jpeg"),
    Case("greyscale jpeg", lambda: encode(sample_photo((96, 72)).convert("L"), "JPEG"), 200, format="jpeg"),
    Case("cmyk jpeg", lambda: encode(sample_photo((96, 72)).convert("CMYK"), "JPEG"), 200, format="jpeg"),
    Case("exif rotated jpeg", lambda: with_exif_orientation(sample_photo((96, 72)), 6), 200, format="jpeg"),
    Case("jpeg with data after EOI", lambda: small_photo("JPEG") + b"trailing garbage" * 64, 200, format="jpeg"),
    Case("png photo", lambda: small_photo("PNG"), 200, format="png"),
    Case("png with trailing bytes", lambda: small_photo("PNG") + b"\x00junk" * 100, 200, format="png"),
    Case("grey L png", lambda: encode(Image.new("L", (40, 30), 90), "PNG"), 200, format="png"),
    Case("LA png", lambda: encode(Image.new("LA", (40, 30), (90, 128)), "PNG"), 200, format="png"),
    Case("palette png with transparency",
         lambda: encode(sample_photo((40, 30)).quantize(16), "PNG", transparency=0), 200, format="png"),
    Case("16-bit grey png", lambda: encode(Image.new("I;16", (40, 30), 40000), "PNG"), 200, format="png"),
    Case("rgba png", lambda: encode(sample_photo((40, 30)).convert("RGBA"), "PNG"), 200, format="png"),
    Case("1x1 png", lambda: encode(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"), 200, format="png"),
    Case("4000x1 png", lambda: encode(Image.new("RGB", (4000, 1), (9, 9, 9)), "PNG"), 200, format="png"),
    Case("1x4000 png", lambda: encode(Image.new("RGB", (1, 4000), (9, 9, 9)), "PNG"), 200, format="png"),
    Case("5000x5000 solid png", lambda: encode(Image.new("L", (5000, 5000), 128), "PNG"), 200, format="png"),
    Case("png with zip appended (polyglot)", lambda: small_photo("PNG") + zip_bytes(), 200, format="png"),
    Case("png sent as image/gif", lambda: small_photo("PNG"), 200, headers={"Content-Type": "image/gif"},
         format="png"),
    Case("gif photo", lambda: small_photo("GIF"), 200, format="gif"),
    Case("1x1 gif", lambda: encode(Image.new("P", (1, 1)), "GIF"), 200, format="gif"),
    Case("animated gif", lambda: animated("GIF"), 200, format="gif"),
    Case("webp lossy (VP8)", lambda: webp(sample_photo((96, 72)), quality=80), 200, format="webp"),
    Case("webp lossless (VP8L)", lambda: webp(sample_photo((96, 72)), lossless=True), 200, format="webp"),
    Case("webp with alpha (VP8X)", lambda: webp(sample_photo((96, 72)).convert("RGBA"), quality=80), 200, format="webp"),
    Case("animated webp", lambda: animated("WEBP"), 200, format="webp"),
    # --- not an image by its bytes: 415 ---------------------------------------------------------
    Case("RIFF alone", lambda: b"RIFF", 415, "unsupported_media_type", OCTET),
    Case("AVI", lambda: riff(b"AVI ", b"LIST" + b"\x00" * 60), 415, "unsupported_media_type", OCTET),
    Case("WAV", lambda: riff(b"WAVE", b"fmt " + b"\x00" * 60), 415, "unsupported_media_type", OCTET),
    Case("WEBP tag at wrong offset",
         lambda: b"RIFF\x20\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 20, 415, "unsupported_media_type", OCTET),
    Case("WEBP without a VP8 chunk", lambda: riff(b"WEBP", b"JUNK" + b"\x00" * 30), 415,
         "unsupported_media_type", OCTET),
    Case("truncated webp (RIFF size larger than body)", lambda: truncated(webp(sample_photo((96, 72))), 0.7), 422,
         "undecodable_image", OCTET),
    Case("webp RIFF size smaller than body", lambda: webp(sample_photo((96, 72))) + b"\x00" * 32, 422,
         "undecodable_image", OCTET),
    Case("BMP", lambda: encode(Image.new("RGB", (8, 8)), "BMP"), 415, "unsupported_media_type", OCTET),
    Case("TIFF", lambda: encode(Image.new("RGB", (8, 8)), "TIFF"), 415, "unsupported_media_type", OCTET),
    Case("ICO", lambda: encode(Image.new("RGB", (16, 16)), "ICO"), 415, "unsupported_media_type", OCTET),
    Case("SVG", lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', 415,
         "unsupported_media_type", OCTET),
    Case("HTML", lambda: b"<!doctype html><html><body>hi</body></html>", 415, "unsupported_media_type", OCTET),
    Case("PDF", lambda: b"%PDF-1.7\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF", 415, "unsupported_media_type", OCTET),
    Case("ZIP", zip_bytes, 415, "unsupported_media_type", OCTET),
    Case("plain text", lambda: b"just some words, not an image", 415, "unsupported_media_type", OCTET),
    Case("GIF88a is no GIF version", lambda: b"GIF88a" + b"\x01\x00\x01\x00" + b"\x00" * 20, 415,
         "unsupported_media_type", OCTET),
    Case("JPEG signature cut short", lambda: b"\xff\xd8", 415, "unsupported_media_type", OCTET),
    Case("PNG signature cut short", lambda: PNG_SIGNATURE[:7], 415, "unsupported_media_type", OCTET),
    Case("png declared as text/html", lambda: small_photo("PNG"), 415, "unsupported_media_type",
         {"Content-Type": "text/html"}),
    Case("gzip content-encoding", lambda: gzip.compress(small_photo("PNG")), 415,
         "unsupported_content_encoding", {"Content-Type": "image/png", "Content-Encoding": "gzip"}),
    # --- allowed signature that does not decode: 422 ---------------------------------------
    Case("truncated jpeg", lambda: truncated(small_photo("JPEG")), 422, "undecodable_image", OCTET),
    Case("truncated png", lambda: truncated(small_photo("PNG")), 422, "undecodable_image", OCTET),
    Case("truncated gif", lambda: truncated(small_photo("GIF")), 422, "undecodable_image", OCTET),
    Case("png with bad IDAT CRC", png_bad_idat_crc, 422, "undecodable_image", OCTET),
    Case("broken webp data", lambda: riff(b"WEBP", b"VP8 " + struct.pack("<I", 30) + b"\x00\x00\x00\x9d\x01\x2a"
                                          + struct.pack("<HH", 64, 48) + b"\xa5" * 20), 422,
         "undecodable_image", OCTET),
    Case("jpeg header only", lambda: b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00",
         422, "undecodable_image", OCTET),
    Case("jpeg SOF only", lambda: jpeg_with_sof(64, 48), 422, "undecodable_image", OCTET),
    Case("png header only", lambda: PNG_SIGNATURE + png_ihdr(64, 48), 422, "undecodable_image", OCTET),
    Case("gif header only", lambda: gif_declaring(64, 48), 422, "undecodable_image", OCTET),
    Case("webp header only", lambda: webp_vp8x_declaring(64, 48), 422, "undecodable_image", OCTET),
    Case("gif polyglot with script", lambda: b"GIF89a\x01\x00\x01\x00<script>alert(1)</script>", 422,
         "undecodable_image", OCTET),
    Case("jpeg magic then PDF", lambda: b"\xff\xd8\xff%PDF-1.7\n" + b"\x00" * 40, 422, "undecodable_image", OCTET),
    Case("png zTXt decompression bomb", lambda: png_with_chunk_before_idat(b"zTXt", b"Comment\x00\x00" + _5_MIB_OF_ZEROS),
         422, "undecodable_image", OCTET),
    Case("png iCCP decompression bomb", lambda: png_with_chunk_before_idat(b"iCCP", b"icc\x00\x00" + _5_MIB_OF_ZEROS),
         422, "undecodable_image", OCTET),
    # --- declared dimensions, refused before decoding: 422 ---------------------------------------
    Case("png zero width", lambda: png_declaring(0, 10), 422, "invalid_image_dimensions", OCTET),
    Case("gif zero height", lambda: gif_declaring(10, 0), 422, "invalid_image_dimensions", OCTET),
    Case("jpeg zero height", lambda: jpeg_with_sof(10, 0), 422, "invalid_image_dimensions", OCTET),
    Case("png side over MAX_IMAGE_SIDE", lambda: png_declaring(20000, 10), 422, "image_too_large", OCTET),
    Case("png pixels over MAX_IMAGE_PIXELS", lambda: png_declaring(10000, 10000), 422, "image_too_large", OCTET),
    Case("jpeg 65000x65000", lambda: jpeg_with_sof(65000, 65000), 422, "image_too_large", OCTET),
    Case("gif 65535x65535", lambda: gif_declaring(65535, 65535), 422, "image_too_large", OCTET),
    Case("webp 16384x16384 canvas", lambda: webp_vp8x_declaring(16384, 16384), 422, "image_too_large", OCTET),
    # --- too large a body: 413 (the integration service runs with MAX_UPLOAD_BYTES = 2 MiB) --------
    Case("3 MiB body", lambda: small_photo("PNG") + b"\x00" * (3 * 1024 * 1024), 413, "payload_too_large", OCTET),
    # --- malformed requests: 400 -----------------------------------------------------------------
    Case("empty body", lambda: b"", 400, "empty_body", OCTET),
    Case("multipart with bad boundary", lambda: b"--nope\r\ngarbage", 400, "malformed_multipart",
         {"Content-Type": "multipart/form-data; boundary=xyz"}),
]
