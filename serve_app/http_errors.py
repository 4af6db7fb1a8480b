"""The one place that turns typed errors into HTTP: status codes and the JSON error body.

Stages raise the typed errors of ``common.errors``; Ray wraps them in ``RayTaskError`` on the way
back, and :func:`as_service_error` unwraps them. Nothing else picks a status code.
"""

from __future__ import annotations

import math

from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError
from starlette.responses import JSONResponse

from common import errors

# Looked up along each error's class hierarchy, most specific first.
STATUS_CODES: dict[type[errors.ServiceError], int] = {
    errors.ClientError: 400,
    errors.Unauthorized: 401,
    errors.NotFound: 404,
    errors.MethodNotAllowed: 405,
    errors.RequestTimeout: 408,
    errors.RateLimited: 429,
    errors.PayloadTooLarge: 413,
    errors.UnsupportedMediaType: 415,
    errors.UndecodableImage: 422,
    errors.ImageTooLarge: 422,
    errors.InvalidImageDimensions: 422,
    errors.DecodeTimeout: 422,
    errors.ServiceError: 500,
    errors.Unavailable: 503,
}
RETRY_AFTER_S = 1


def status_of(error: errors.ServiceError) -> int:
    return next(STATUS_CODES[cls] for cls in type(error).__mro__ if cls in STATUS_CODES)


def error_body(error: errors.ServiceError, request_id: str) -> dict:
    return {"error": {"code": error.code, "message": error.message, "request_id": request_id}}


def headers_for(error: errors.ServiceError) -> dict[str, str] | None:
    """When to retry, or how to authenticate: the headers an error status calls for."""
    if isinstance(error, errors.RateLimited):
        return {"Retry-After": str(max(1, math.ceil(error.retry_after_s)))}
    if isinstance(error, errors.Unauthorized):
        return {"WWW-Authenticate": "Bearer"}
    return {"Retry-After": str(RETRY_AFTER_S)} if status_of(error) == 503 else None


def error_response(error: errors.ServiceError, request_id: str) -> JSONResponse:
    return JSONResponse(error_body(error, request_id), status_code=status_of(error), headers=headers_for(error))


def open_inference_status_of(error: errors.ServiceError) -> int:
    """The Open Inference Protocol's coarser statuses: 400 for anything the client sent wrong,
    including an image that does not decode or is too large, and 404 for what does not exist."""
    status = status_of(error)
    keeps_status = (errors.NotFound, errors.MethodNotAllowed, errors.Unauthorized, errors.RateLimited)
    if isinstance(error, keeps_status) or status >= 500:
        return status
    return 400


def open_inference_error_response(error: errors.ServiceError) -> JSONResponse:
    """``{"error": "<message>"}`` with ``Content-Type: application/json`` exactly, which the KServe
    SDK compares; the request ID travels in the X-Request-ID header."""
    return JSONResponse(open_inference_error_body(error), status_code=open_inference_status_of(error),
                        headers=headers_for(error))


def open_inference_error_body(error: errors.ServiceError) -> dict:
    return {"error": error.message}


def as_service_error(exc: BaseException) -> errors.ServiceError:
    """The typed error behind ``exc``, unwrapping what Ray adds when it crosses processes.

    Anything that is not one of ours becomes an :class:`~common.errors.InternalError` (a bug) or,
    for a replica that died or a request Serve shed, :class:`~common.errors.Unavailable`.
    """
    while isinstance(exc, RayTaskError) and exc.cause is not None and exc.cause is not exc:
        exc = exc.cause
    if isinstance(exc, errors.ServiceError):
        return exc
    if isinstance(exc, (BackPressureError, RayActorError, ActorUnavailableError)):
        return errors.Unavailable("the service is at capacity or recovering; retry shortly")
    return errors.InternalError("internal error; the request ID identifies it in the server logs")
