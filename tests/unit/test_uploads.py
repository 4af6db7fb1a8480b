"""Reading uploads (serve_app/uploads.py): top_k, refused types and encodings, the body limit and
the multipart file, without Ray."""

from __future__ import annotations

import asyncio

import pytest
from starlette.datastructures import Headers
from starlette.requests import Request

from common.errors import (
    InvalidParameter,
    MalformedMultipart,
    PayloadTooLarge,
    UnsupportedContentEncoding,
    UnsupportedMediaType,
)
from serve_app.uploads import (
    MULTIPART_OVERHEAD_BYTES,
    file_from_multipart,
    parse_top_k,
    read_limited_body,
    read_upload,
    refuse_impossible_upload,
)

BOUNDARY = "xyz"


def multipart(field: str, data: bytes) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"a.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


async def chunks_of(*chunks: bytes):
    for chunk in chunks:
        yield chunk


def request(body: bytes, content_type: str, chunk_size: int = 65536) -> Request:
    """A Starlette request as Serve hands it to the ingress, its body arriving in chunks."""
    messages = [{"type": "http.request", "body": body[i:i + chunk_size], "more_body": i + chunk_size < len(body)}
                for i in range(0, max(len(body), 1), chunk_size)]

    async def receive():
        return messages.pop(0)

    headers = [(b"content-type", content_type.encode())]
    return Request({"type": "http", "method": "POST", "path": "/v1/classify", "headers": headers}, receive)


def test_top_k_defaults_to_five_and_takes_a_positive_integer():
    assert parse_top_k(None) == 5
    assert parse_top_k("1") == 1 and parse_top_k("1000") == 1000


@pytest.mark.parametrize("raw", ["0", "-1", "abc", "2.5", ""])
def test_top_k_that_is_not_a_positive_integer_is_invalid(raw):
    with pytest.raises(InvalidParameter, match="top_k"):
        parse_top_k(raw)


@pytest.mark.parametrize("content_type", ["text/plain", "video/x-msvideo", "audio/wav", "application/json",
                                          "application/pdf; charset=binary", "Application/ZIP"])
def test_a_declared_type_that_is_never_an_image_is_refused_before_the_body(content_type):
    with pytest.raises(UnsupportedMediaType, match="can never be an image"):
        refuse_impossible_upload(Headers({"content-type": content_type}))


@pytest.mark.parametrize("content_type", ["", "image/png", "image/jpeg", "application/octet-stream",
                                          "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"])
def test_image_and_neutral_types_are_left_to_the_bytes(content_type):
    refuse_impossible_upload(Headers({"content-type": content_type}))


def test_a_compressed_body_is_refused():
    with pytest.raises(UnsupportedContentEncoding, match="gzip"):
        refuse_impossible_upload(Headers({"content-type": "image/png", "content-encoding": "gzip"}))
    refuse_impossible_upload(Headers({"content-encoding": "identity"}))


def test_a_declared_length_over_the_limit_is_refused_without_reading_the_body():
    async def never_read():
        raise AssertionError("the body was read")
        yield b""

    with pytest.raises(PayloadTooLarge, match="body of 11 bytes exceeds the limit of 10 bytes"):
        asyncio.run(read_limited_body(Headers({"content-length": "11"}), never_read(), limit=10))


def test_a_length_that_is_not_a_byte_count_is_invalid():
    with pytest.raises(InvalidParameter, match="Content-Length"):
        asyncio.run(read_limited_body(Headers({"content-length": "-5"}), chunks_of(b"x"), limit=10))


def test_a_streamed_body_is_refused_once_past_the_limit_and_taken_at_it():
    with pytest.raises(PayloadTooLarge, match="limit of 10 bytes"):
        asyncio.run(read_limited_body(Headers(), chunks_of(b"123456", b"78901"), limit=10))
    assert asyncio.run(read_limited_body(Headers(), chunks_of(b"123456", b"7890"), limit=10)) == b"1234567890"


def test_the_multipart_file_field_is_the_image():
    headers = Headers({"content-type": f"multipart/form-data; boundary={BOUNDARY}"})
    assert asyncio.run(file_from_multipart(headers, multipart("file", b"\x89PNG..."))) == b"\x89PNG..."


@pytest.mark.parametrize(("body", "says"), [(multipart("image", b"\x89PNG"), "no file in the field 'file'"),
                                            (b"--nope\r\ngarbage", "malformed multipart body")])
def test_multipart_without_a_file_field_or_malformed_is_refused(body, says):
    headers = Headers({"content-type": f"multipart/form-data; boundary={BOUNDARY}"})
    with pytest.raises(MalformedMultipart, match=says):
        asyncio.run(file_from_multipart(headers, body))


def test_an_upload_is_the_body_and_names_the_format_its_type_claims():
    upload = asyncio.run(read_upload(request(b"\x89PNG" + b"\x00" * 100_000, "image/jpeg"), max_upload_bytes=200_000))
    assert upload.data[:4] == b"\x89PNG" and len(upload.data) == 100_004
    assert upload.claimed_format == "jpeg"
    assert asyncio.run(read_upload(request(b"x", "application/octet-stream"), 10)).claimed_format is None


def test_a_multipart_file_at_the_limit_is_taken_its_parts_headers_not_counted_against_it():
    limit = 100_000
    body = multipart("file", b"\xff" * limit)
    assert len(body) > limit
    upload = asyncio.run(read_upload(request(body, f"multipart/form-data; boundary={BOUNDARY}"), limit))
    assert upload.data == b"\xff" * limit
    with pytest.raises(PayloadTooLarge):
        too_large = multipart("file", b"\xff" * (limit + MULTIPART_OVERHEAD_BYTES + 1))
        asyncio.run(read_upload(request(too_large, f"multipart/form-data; boundary={BOUNDARY}"), limit))


def test_an_upload_declared_as_video_is_refused():
    with pytest.raises(UnsupportedMediaType):
        asyncio.run(read_upload(request(b"RIFF....AVI ", "video/x-msvideo"), 10))
