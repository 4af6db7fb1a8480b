import numpy as np
import pytest
from PIL import Image

from common.errors import ImageTooLarge, UndecodableImage
from common.contracts import InputGeometry
from deployments.preprocessing import BACKGROUND_RGB, ImageDecoder
from tests.images import encode, photo_bytes

GEOMETRY = InputGeometry(size=224, crop_fraction=0.875)


def decoder(max_pixels=40_000_000, max_side=16384):
    return ImageDecoder(GEOMETRY, max_pixels=max_pixels, max_side=max_side)


def centre_pixel(data: bytes, fmt: str) -> tuple[int, int, int]:
    decoded = decoder().decode(data, fmt)
    assert decoded.pixels.shape == (224, 224, 3)
    assert decoded.pixels.dtype == np.uint8
    return tuple(int(v) for v in decoded.pixels[112, 112])


def close(actual, expected, tolerance=3):
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected))


@pytest.mark.parametrize("fmt,key", [("PNG", "png"), ("WEBP", "webp"), ("GIF", "gif")])
def test_rgb_colour_survives_each_lossless_format(fmt, key):
    data = encode(Image.new("RGB", (40, 30), (200, 30, 90)), fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    assert close(centre_pixel(data, key), (200, 30, 90), tolerance=8 if fmt == "GIF" else 1)


def test_grey_l_becomes_equal_rgb_channels():
    data = encode(Image.new("L", (20, 20), 77), "PNG")
    assert centre_pixel(data, "png") == (77, 77, 77)


def test_sixteen_bit_grey_is_scaled_not_saturated():
    data = encode(Image.new("I;16", (16, 16), 32768), "PNG")
    assert Image.open(__import__("io").BytesIO(data)).mode.startswith("I")
    assert close(centre_pixel(data, "png"), (127, 127, 127), tolerance=1)


def test_cmyk_jpeg_converts_to_the_right_colour():
    # Pure cyan in CMYK is (0, 255, 255) in RGB.
    data = encode(Image.new("CMYK", (32, 32), (255, 0, 0, 0)), "JPEG", quality=95)
    assert Image.open(__import__("io").BytesIO(data)).mode == "CMYK"
    assert close(centre_pixel(data, "jpeg"), (0, 255, 255), tolerance=6)


def test_fully_transparent_rgba_shows_the_background_not_hidden_colour():
    data = encode(Image.new("RGBA", (20, 20), (255, 0, 0, 0)), "PNG")
    assert centre_pixel(data, "png") == BACKGROUND_RGB


def test_opaque_rgba_keeps_its_colour():
    data = encode(Image.new("RGBA", (20, 20), (10, 120, 240, 255)), "PNG")
    assert centre_pixel(data, "png") == (10, 120, 240)


def test_half_transparent_la_blends_with_the_background():
    data = encode(Image.new("LA", (20, 20), (0, 128)), "PNG")
    assert close(centre_pixel(data, "png"), (127, 127, 127), tolerance=2)


def test_palette_with_transparent_index_uses_background():
    image = Image.new("P", (20, 20), 1)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    data = encode(image, "PNG", transparency=1)
    assert centre_pixel(data, "png") == BACKGROUND_RGB


def test_palette_without_transparency_keeps_colour():
    image = Image.new("P", (20, 20), 1)
    image.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    assert centre_pixel(encode(image, "PNG"), "png") == (0, 200, 0)


def test_exif_orientation_is_applied():
    # Left half red, right half blue; EXIF orientation 6 means "rotate 90 degrees clockwise to view",
    # which puts red on top.
    image = Image.new("RGB", (64, 32), (255, 0, 0))
    image.paste((0, 0, 255), (32, 0, 64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(image, "JPEG", exif=exif.tobytes(), quality=95)
    decoded = decoder().decode(data, "jpeg")
    assert (decoded.width, decoded.height) == (32, 64)
    top, bottom = decoded.pixels[10, 112], decoded.pixels[214, 112]
    assert top[0] > 200 and top[2] < 60, top
    assert bottom[2] > 200 and bottom[0] < 60, bottom


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    assert close(centre_pixel(data, "gif"), (255, 0, 0), tolerance=8)


def test_centre_crop_keeps_the_middle_of_a_wide_image():
    image = Image.new("RGB", (300, 100), (0, 0, 255))
    image.paste((0, 255, 0), (100, 0, 200, 100))
    decoded = decoder().decode(encode(image, "PNG"), "png")
    assert (decoded.width, decoded.height) == (300, 100)
    # The crop is 87.5% of the short side around the centre: all green.
    assert {tuple(p) for p in decoded.pixels.reshape(-1, 3)} == {(0, 255, 0)}


def test_large_jpeg_decodes_to_model_input():
    decoded = decoder().decode(photo_bytes("JPEG", size=(3000, 2000)), "jpeg")
    assert (decoded.width, decoded.height) == (3000, 2000)
    assert decoded.pixels.shape == (224, 224, 3)


def test_truncated_png_is_undecodable():
    data = encode(Image.new("RGB", (64, 64), (1, 2, 3)), "PNG")
    with pytest.raises(UndecodableImage):
        decoder().decode(data[: len(data) // 2], "png")


def test_bytes_of_another_format_are_undecodable():
    with pytest.raises(UndecodableImage):
        decoder().decode(encode(Image.new("RGB", (8, 8)), "PNG"), "jpeg")


def test_dimension_limits():
    data = encode(Image.new("L", (300, 200)), "PNG")
    with pytest.raises(ImageTooLarge, match="longest side"):
        decoder(max_side=299).decode(data, "png")
    with pytest.raises(ImageTooLarge, match="pixels"):
        decoder(max_pixels=300 * 200 - 1).decode(data, "png")
    assert decoder(max_side=300, max_pixels=300 * 200).decode(data, "png").width == 300


def test_health_self_test_image_decodes():
    from common.self_test import SELF_TEST_COLOUR, self_test_png

    decoded = decoder().decode(self_test_png(), "png")
    assert tuple(int(v) for v in decoded.pixels[112, 112]) == SELF_TEST_COLOUR


def test_decode_past_its_budget_times_out_and_the_decoder_stays_usable():
    import asyncio

    from common.errors import DecodeTimeout
    from deployments.preprocessing import BudgetedDecoder

    slow = encode(Image.new("L", (5000, 5000), 128), "PNG")  # ~0.25 s of inflating here
    quick = encode(Image.new("RGB", (40, 30), (5, 6, 7)), "PNG")

    async def scenario():
        budgeted = BudgetedDecoder(decoder(), timeout_s=0.01)
        with pytest.raises(DecodeTimeout, match="0.01 s budget"):
            await budgeted.decode(slow, "png")
        budgeted.timeout_s = 30
        return await budgeted.decode(quick, "png")

    assert asyncio.run(scenario()).pixels[0, 0].tolist() == [5, 6, 7]
