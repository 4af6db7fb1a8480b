"""A known-good image that health checks push through their stage's core."""

from __future__ import annotations

import functools
import io

from PIL import Image

SELF_TEST_COLOUR = (200, 40, 10)


@functools.cache
def self_test_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGBA", (48, 32), SELF_TEST_COLOUR + (255,)).save(buffer, "PNG")
    return buffer.getvalue()
