"""Reading an upload from an HTTP request: the declared type and encoding, the body limit, the
multipart ``file`` field and ``top_k``. Plain functions over headers, query values and the body's
chunks; no Ray, and nothing here decodes an image (the bytes are judged by the validation stage).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from common.errors import (
    InvalidParameter,
    MalformedMultipart,
    PayloadTooLarge,
    UnsupportedContentEncoding,
    UnsupportedMediaType,
)

DEFAULT_TOP_K = 5
# Room for multipart boundaries and part headers on top of the file itself.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
# Declared types that can never carry an image: refused before the body is read. Anything else,
# including a wrong image type, is only logged: the bytes decide.
_NEVER_IMAGE_TYPES = ("text/", "audio/", "video/", "font/", "application/json", "application/xml",
                      "application/javascript", "application/xhtml+xml", "application/pdf",
                      "application/zip", "application/gzip")
_DECLARED_IMAGE_TYPES = {"image/jpeg": "jpeg", "image/jpg": "jpeg", "image/pjpeg": "jpeg",
                         "image/png": "png", "image/gif": "gif", "image/webp": "webp"}


@dataclass(frozen=True)
class Upload:
    data: bytes
    claimed_format: str | None  # the image format the Content-Type names, if it names one


def media_type(header: str) -> str:
    return header.split(";", 1)[0].strip().lower()


def parse_top_k(raw: str | None) -> int:
    """The ``top_k`` query value; the model replica refuses more than its class count."""
    if raw is None:
        return DEFAULT_TOP_K
    try:
        top_k = int(raw)
    except ValueError:
        raise InvalidParameter(f"top_k={raw!r} is not an integer") from None
    if top_k < 1:
        raise InvalidParameter(f"top_k={top_k} must be at least 1")
    return top_k


def refuse_impossible_upload(headers: Mapping[str, str]) -> None:
    """Refuse, before reading the body, uploads whose headers say they cannot be a plain image."""
    declared = media_type(headers.get("content-type", ""))
    if declared.startswith(_NEVER_IMAGE_TYPES):
        raise UnsupportedMediaType(f"Content-Type {declared!r} can never be an image")
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedContentEncoding(
            f"Content-Encoding {encoding!r} is not accepted; send the image bytes as they are"
        )


async def read_limited_body(headers: Mapping[str, str], chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """Read the body, refusing it as soon as it is known to exceed ``limit`` bytes."""
    declared = headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidParameter(f"Content-Length {declared!r} is not a byte count")
        if int(declared) > limit:
            raise PayloadTooLarge(f"body of {declared} bytes exceeds the limit of {limit} bytes")
    parts, received = [], 0
    async for chunk in chunks:
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


async def _single_chunk(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def file_from_multipart(headers: Headers, body: bytes) -> bytes:
    """The bytes of the ``file`` field of a multipart/form-data body."""
    parser = MultiPartParser(headers, _single_chunk(body), max_files=1, max_fields=16)
    try:
        form = await parser.parse()
    except MultiPartException as exc:
        raise MalformedMultipart(f"malformed multipart body: {exc.message}") from None
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise MalformedMultipart("multipart body has no file in the field 'file'")
    try:
        return await upload.read()
    finally:
        await form.close()


async def read_upload(request: Request, max_upload_bytes: int) -> Upload:
    """The image bytes of a ``/v1/classify`` request: the body itself, or its multipart ``file``."""
    refuse_impossible_upload(request.headers)
    declared = media_type(request.headers.get("content-type", ""))
    is_multipart = declared == "multipart/form-data"
    limit = max_upload_bytes + (MULTIPART_OVERHEAD_BYTES if is_multipart else 0)
    body = await read_limited_body(request.headers, request.stream(), limit)
    data = await file_from_multipart(request.headers, body) if is_multipart else body
    return Upload(data, _DECLARED_IMAGE_TYPES.get(declared))
