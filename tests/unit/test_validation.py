
import pytest
from PIL import Image

from common.errors import (
    EmptyBody,
    ImageTooLarge,
    InvalidImageDimensions,
    PayloadTooLarge,
    UndecodableImage,
    UnsupportedMediaType,
)
from deployments.validation import ImageValidator
from tests.images import encode, riff

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "data,fmt",
    [
        (b"\xff\xd8\xff\xe0" + b"\x00" * 8, "jpeg"),
        (PNG_SIGNATURE + b"\x00" * 8, "png"),
        (b"GIF87a" + b"\x00" * 8, "gif"),
        (b"GIF89a" + b"\x00" * 8, "gif"),
        (riff(b"WEBP", b"VP8 " + b"\x00" * 8), "webp"),
    ],
)
def test_accepts_the_four_signatures(data, fmt):
    assert ImageValidator().validate_magic_bytes(data) == (True, fmt)


@pytest.mark.parametrize("fmt,expected", [("JPEG", "jpeg"), ("PNG", "png"), ("GIF", "gif"), ("WEBP", "webp")])
def test_accepts_real_encoded_images(fmt, expected):
    data = encode(Image.new("RGB", (8, 8), (10, 200, 30)), fmt)
    assert ImageValidator().validate_magic_bytes(data) == (True, expected)


@pytest.mark.parametrize(
    "data",
    [
        riff(b"AVI "),  # AVI
        riff(b"WAVE"),  # WAV
        riff(b"RMID"),  # some other RIFF file
        b"RIFF",  # RIFF alone
        b"RIFF\x10\x00\x00\x00",  # RIFF with a size and nothing more
        b"RIFF\x10\x00\x00\x00WEB",  # one byte short of the WEBP tag
        b"RIFF\x10\x00\x00\x00\x00WEBP",  # WEBP at the wrong offset
        b"WEBPRIFF\x00\x00\x00\x00",  # tags swapped
        b"\x00RIFF\x10\x00\x00\x00WEBP",  # RIFF at the wrong offset
        b"\xff\xd8",  # JPEG signature cut short
        PNG_SIGNATURE[:7],  # PNG signature cut short
        b"GIF89",  # GIF signature cut short
        b"GIF88a" + b"\x00" * 8,  # not a GIF version
        b"BM" + b"\x00" * 30,  # BMP
        b"II*\x00" + b"\x00" * 8,  # TIFF
        b"%PDF-1.7\n",
        b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        b"",
    ],
)
def test_rejects_non_images_and_partial_signatures(data):
    assert ImageValidator().validate_magic_bytes(data) == (False, None)


def test_validate_returns_format_size_and_declared_dimensions():
    data = encode(Image.new("RGB", (4, 3)), "PNG")
    validated = ImageValidator(max_upload_bytes=1024).validate(data)
    assert (validated.format, validated.num_bytes, validated.width, validated.height) == ("png", len(data), 4, 3)


def test_validate_rejects_empty_body():
    with pytest.raises(EmptyBody):
        ImageValidator().validate(b"")


def test_validate_rejects_body_over_the_limit():
    data = encode(Image.new("RGB", (64, 64)), "PNG")
    with pytest.raises(PayloadTooLarge):
        ImageValidator(max_upload_bytes=len(data) - 1).validate(data)
    assert ImageValidator(max_upload_bytes=len(data)).validate(data).format == "png"


def test_validate_rejects_riff_that_is_not_webp():
    with pytest.raises(UnsupportedMediaType):
        ImageValidator().validate(riff(b"AVI "))


@pytest.mark.parametrize("fmt,key,params", [
    ("JPEG", "jpeg", {}), ("JPEG", "jpeg", {"progressive": True}), ("PNG", "png", {}), ("GIF", "gif", {}),
    ("WEBP", "webp", {"quality": 80}), ("WEBP", "webp", {"lossless": True}),
])
def test_declared_dimensions_match_pillow(fmt, key, params):
    from common.image_header import declared_dimensions

    image = Image.new("RGB", (123, 45), (1, 2, 3))
    assert declared_dimensions(encode(image, fmt, **params), key) == (123, 45)


def test_declared_dimensions_of_webp_with_alpha_and_jpeg_with_exif():
    from common.image_header import declared_dimensions

    rgba = Image.new("RGBA", (77, 33), (1, 2, 3, 100))
    assert declared_dimensions(encode(rgba, "WEBP"), "webp") == (77, 33)
    exif = Image.Exif()
    exif[0x010E] = "x" * 5000  # a long description pushes the frame header further in
    assert declared_dimensions(encode(Image.new("RGB", (31, 17)), "JPEG", exif=exif.tobytes()), "jpeg") == (31, 17)


def test_limits_are_checked_on_declared_dimensions():
    validator = ImageValidator(max_upload_bytes=1 << 20, max_image_side=100, max_image_pixels=5000)
    assert validator.validate(encode(Image.new("RGB", (100, 50)), "PNG")).width == 100
    with pytest.raises(ImageTooLarge):
        validator.validate(encode(Image.new("RGB", (101, 10)), "PNG"))
    with pytest.raises(ImageTooLarge):
        validator.validate(encode(Image.new("RGB", (80, 70)), "PNG"))
    zero_height_gif = b"GIF89a\x05\x00\x00\x00\x00\x00\x00;"
    with pytest.raises(InvalidImageDimensions):
        validator.validate(zero_height_gif)


def test_webp_needs_a_vp8_chunk_and_a_consistent_riff_size():
    webp = encode(Image.new("RGB", (8, 8)), "WEBP")
    validator = ImageValidator()
    assert validator.validate(webp).format == "webp"
    assert validator.validate_magic_bytes(riff(b"WEBP", b"JUNK" + b"\x00" * 8)) == (False, None)
    with pytest.raises(UndecodableImage, match="RIFF header declares"):
        validator.validate(webp + b"\x00\x00")
    with pytest.raises(UndecodableImage, match="RIFF header declares"):
        validator.validate(webp[:-2])
