"""Property test: random and mutated images through the validator and decoder.

Only the project's own typed errors may come out, and every one maps to a 4xx. CI runs 2 000
examples per property; a longer run:

    HYPOTHESIS_EXAMPLES=50000 python -m pytest tests/unit/test_hostile_properties.py
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.errors import ServiceError
from common.contracts import InputGeometry
from deployments.preprocessing import ImageDecoder
from deployments.validation import ImageValidator
from serve_app.http_errors import status_of
from tests.catalogue import CASES
from tests.images import photo_bytes

EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "2000"))
SEEDS = [case.make() for case in CASES if case.status in (200, 422) and len(case.make()) < 200_000]
VALIDATOR = ImageValidator(max_upload_bytes=2 * 1024 * 1024, max_image_side=4096, max_image_pixels=4_000_000)
DECODER = ImageDecoder(InputGeometry(224, 0.875), max_pixels=4_000_000, max_side=4096)
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(data: bytes) -> int:
    """200, or the status of the typed error the pipeline raised. Anything else fails the test."""
    try:
        validated = VALIDATOR.validate(data)
        decoded = DECODER.decode(data, validated.format)
    except ServiceError as error:
        status = status_of(error)
        assert 400 <= status < 500, error
        return status
    assert decoded.pixels.shape == (224, 224, 3)
    return 200


@st.composite
def mutated_images(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        mutation = draw(st.sampled_from(["truncate", "flip", "append", "overwrite"]))
        if mutation == "truncate" and data:
            del data[draw(st.integers(0, len(data) - 1)):]
        elif mutation == "flip" and data:
            position = draw(st.integers(0, len(data) - 1))
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif mutation == "append":
            data += draw(st.binary(min_size=1, max_size=256))
        elif mutation == "overwrite" and data:
            position = draw(st.integers(0, len(data) - 1))
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[position : position + len(chunk)] = chunk
    return bytes(data)


@PROPERTY
@given(mutated_images())
def test_mutated_images_only_raise_typed_client_errors(data):
    assert outcome(data) in (200, 400, 413, 415, 422)


@PROPERTY
@given(st.binary(max_size=4096))
def test_random_bytes_only_raise_typed_client_errors(data):
    assert outcome(data) in (200, 400, 415, 422)


@PROPERTY
@given(st.sampled_from([b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"RIFF\x00\x00\x00\x00WEBPVP8 "]),
       st.binary(max_size=2048))
def test_random_data_behind_a_valid_signature_only_raises_typed_client_errors(signature, tail):
    assert outcome(signature + tail) in (200, 415, 422)


WHOLE_PHOTOS = [photo_bytes(fmt, size=(96, 72)) for fmt in ("JPEG", "PNG", "GIF", "WEBP")]


@PROPERTY
@given(st.sampled_from(WHOLE_PHOTOS), st.floats(0.05, 0.95))
def test_truncated_images_are_never_loaded_leniently(data, kept):
    """A photo cut anywhere inside its image data is refused as undecodable, never half-decoded."""
    assert outcome(data) == 200
    assert outcome(data[: int(len(data) * kept)]) == 422
