"""Typed errors, shared by every layer, with no HTTP in them.

A stage raises one of these; Ray carries it across processes, and the ingress maps it to a status
code and the JSON error body in ``serve_app/http_errors.py``, the one place that knows HTTP. Each
error has a stable machine-readable ``code``. The two families below decide how the service
treats a failure: a :class:`ClientError` is the request's fault and an :class:`Unavailable` is
load or recovery; neither is reported to error tracking. Anything else is a fault.
"""

from __future__ import annotations

from typing import ClassVar


class ServiceError(Exception):
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self):
        # Keep the exception picklable across Ray processes with only its message.
        return (type(self), (self.message,))


class InternalError(ServiceError):
    """A bug: the request ID finds it in the logs and in error tracking."""


class ClientError(ServiceError):
    """The request is at fault: sending it again unchanged gets the same answer."""

    code = "bad_request"


class BadRequest(ClientError):
    code = "bad_request"


class EmptyBody(BadRequest):
    code = "empty_body"


class InvalidParameter(BadRequest):
    code = "invalid_parameter"


class MalformedMultipart(BadRequest):
    code = "malformed_multipart"


class NotFound(ClientError):
    code = "not_found"


class MethodNotAllowed(ClientError):
    code = "method_not_allowed"


class Unauthorized(ClientError):
    code = "unauthorized"


class RateLimited(ClientError):
    """The caller's key is over its rate limit; ``retry_after_s`` says when a request would pass."""

    code = "rate_limited"

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def __reduce__(self):
        return (type(self), (self.message, self.retry_after_s))


class RequestTimeout(ClientError):
    code = "request_timeout"


class PayloadTooLarge(ClientError):
    code = "payload_too_large"


class UnsupportedMediaType(ClientError):
    code = "unsupported_media_type"


class UnsupportedContentEncoding(UnsupportedMediaType):
    code = "unsupported_content_encoding"


class UndecodableImage(ClientError):
    code = "undecodable_image"


class ImageTooLarge(ClientError):
    code = "image_too_large"


class InvalidImageDimensions(ClientError):
    code = "invalid_image_dimensions"


class DecodeTimeout(ClientError):
    code = "decode_timeout"


class Unavailable(ServiceError):
    """Overload, not ready yet, or recovering from a lost replica: retry shortly."""

    code = "service_unavailable"
