"""Typed service errors and the one place that turns them into HTTP responses.

Deployments raise these; Ray carries them across processes (wrapped in ``RayTaskError``), and the
ingress maps them with :func:`error_response`. No other module picks a status code.
"""

from __future__ import annotations

from typing import ClassVar

from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError
from starlette.responses import JSONResponse


class ServiceError(Exception):
    """Base class: a failure with a stable machine-readable code and an HTTP status."""

    status_code: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __reduce__(self):
        # Keep the exception picklable across Ray processes with only its message.
        return (type(self), (self.message,))


class BadRequest(ServiceError):
    status_code = 400
    code = "bad_request"


class EmptyBody(BadRequest):
    code = "empty_body"


class InvalidParameter(BadRequest):
    code = "invalid_parameter"


class MalformedMultipart(BadRequest):
    code = "malformed_multipart"


class PayloadTooLarge(ServiceError):
    status_code = 413
    code = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status_code = 415
    code = "unsupported_media_type"


class UnsupportedContentEncoding(UnsupportedMediaType):
    code = "unsupported_content_encoding"


class UndecodableImage(ServiceError):
    status_code = 422
    code = "undecodable_image"


class ImageTooLarge(ServiceError):
    status_code = 422
    code = "image_too_large"


class InvalidImageDimensions(ServiceError):
    status_code = 422
    code = "invalid_image_dimensions"


class DecodeTimeout(ServiceError):
    status_code = 422
    code = "decode_timeout"


class NotFound(ServiceError):
    status_code = 404
    code = "not_found"


class MethodNotAllowed(ServiceError):
    status_code = 405
    code = "method_not_allowed"


class ServiceUnavailable(ServiceError):
    status_code = 503
    code = "service_unavailable"


class InternalError(ServiceError):
    status_code = 500
    code = "internal_error"


def error_body(error: ServiceError, request_id: str) -> dict:
    return {"error": {"code": error.code, "message": error.message, "request_id": request_id}}


def error_response(error: ServiceError, request_id: str) -> JSONResponse:
    headers = {"Retry-After": "1"} if error.status_code == 503 else None
    return JSONResponse(error_body(error, request_id), status_code=error.status_code, headers=headers)


def as_service_error(exc: BaseException) -> ServiceError:
    """The typed error behind ``exc``, unwrapping what Ray adds when it crosses processes.

    Anything that is not one of ours becomes a 500 (a bug) or, for a replica that died or a
    request Serve shed, a 503 the client may retry.
    """
    while isinstance(exc, RayTaskError) and exc.cause is not None and exc.cause is not exc:
        exc = exc.cause
    if isinstance(exc, ServiceError):
        return type(exc)(exc.message)
    if isinstance(exc, (BackPressureError, RayActorError, ActorUnavailableError)):
        return ServiceUnavailable("the service is at capacity or recovering; retry shortly")
    return InternalError("internal error; the request ID identifies it in the server logs")
