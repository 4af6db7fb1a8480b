"""The one place that turns typed errors into HTTP: status codes, the JSON error bodies, and the
ingress's Starlette exception handlers.

Stages raise the typed errors of ``common.errors``; Ray wraps them in ``RayTaskError`` on the way
back, and :func:`as_service_error` unwraps them. Nothing else picks a status code.
"""

from __future__ import annotations

import logging
import math

from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from common import errors
from common.error_tracking import report as report_to_error_tracking
from common.metrics import RejectionCounter
from serve_app.routes import is_open_inference, request_id_of

logger = logging.getLogger("ray.serve")

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


def triage(exc: Exception, request_id: str) -> errors.ServiceError:
    """The typed error for ``exc``. Only a fault is logged at ERROR and reported to error
    tracking; overload and recovery are logged at WARNING, and a client's mistake is left to the
    access log and the rejection counter, so a traffic spike cannot flood either."""
    error = as_service_error(exc)
    if isinstance(error, errors.InternalError):
        logger.error("request %s failed: %r", request_id, exc, exc_info=exc)
        if not isinstance(exc, RayTaskError):  # a stage's own fault: reported there
            report_to_error_tracking(exc, request_id)
    elif isinstance(error, errors.Unavailable):
        logger.warning("request %s: %s (%s)", request_id, error.message, type(exc).__name__)
    return error


class ErrorResponses:
    """The ingress's exception handlers: whatever a route raises is answered with its protocol's
    JSON error (the Open Inference Protocol's under /v2) and counted by status and code."""

    def __init__(self, rejections: RejectionCounter) -> None:
        self._rejections = rejections

    @property
    def handlers(self) -> dict:
        """Starlette's ``exception_handlers``: the typed errors (the data plane turns the graph's
        failures into them too) and the routing's own 404 and 405.

        Not ``Exception``: Starlette gives that one to its outermost middleware, which answers and
        raises again, past the access middleware's count. A fault is answered by :meth:`respond`
        from the access middleware instead (``serve_app/access.py``).
        """
        return {HTTPException: self.no_route, errors.ServiceError: self.respond}

    async def respond(self, request: Request, exc: Exception) -> Response:
        request_id = request_id_of(request)
        error = exc if isinstance(exc, errors.ServiceError) else triage(exc, request_id)
        if is_open_inference(request.scope):
            response = open_inference_error_response(error)
        else:
            response = error_response(error, request_id)
        self._rejections.count(response.status_code, error.code)
        return response

    async def no_route(self, request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 405:
            return await self.respond(request, errors.MethodNotAllowed(
                f"{request.method} is not allowed on {request.url.path}"))
        return await self.respond(request, errors.NotFound(f"no route {request.url.path}"))
