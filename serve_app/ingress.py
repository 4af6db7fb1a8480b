"""The HTTP ingress deployment: routing, reading the body, error mapping and the response.

It never decodes an image; it hands the bytes to the validation, preprocessing and inference
deployments through their DeploymentHandles.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from functools import wraps

from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError
from ray.serve.handle import DeploymentHandle, DeploymentResponse
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from common.contracts import ValidatedImage
from common.error_tracking import init_error_tracking
from common.error_tracking import report as report_to_error_tracking
from common.errors import (
    InternalError,
    InvalidParameter,
    MalformedMultipart,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    Unavailable,
    UnsupportedContentEncoding,
    UnsupportedMediaType,
)
from common.metrics import RejectionCounter, StageTimer
from common.settings import get_settings
from serve_app.http_errors import as_service_error, error_response, status_of

logger = logging.getLogger("ray.serve")

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


def media_type(header: str) -> str:
    return header.split(";", 1)[0].strip().lower()


def refuse_impossible_upload(request: Request) -> None:
    """Refuse, before reading the body, uploads whose headers say they cannot be a plain image."""
    declared = media_type(request.headers.get("content-type", ""))
    if declared.startswith(_NEVER_IMAGE_TYPES):
        raise UnsupportedMediaType(f"Content-Type {declared!r} can never be an image")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise UnsupportedContentEncoding(
            f"Content-Encoding {encoding!r} is not accepted; send the image bytes as they are"
        )


def request_id_of(request: Request) -> str:
    """The request's ID. Serve's proxy takes the client's X-Request-ID or generates one, and
    echoes it in the response headers; using the same ID ties our logs to Serve's access log."""
    return request.headers.get("x-request-id") or uuid.uuid4().hex


def parse_top_k(request: Request) -> int:
    raw = request.query_params.get("top_k")
    if raw is None:
        return DEFAULT_TOP_K
    try:
        top_k = int(raw)
    except ValueError:
        raise InvalidParameter(f"top_k={raw!r} is not an integer") from None
    if top_k < 1:  # the model replica refuses more than its class count
        raise InvalidParameter(f"top_k={top_k} must be at least 1")
    return top_k


async def read_limited_body(request: Request, limit: int) -> bytes:
    """Read the body, refusing it as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidParameter(f"Content-Length {declared!r} is not a byte count")
        if int(declared) > limit:
            raise PayloadTooLarge(f"body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks, received = [], 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _single_chunk(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def file_from_multipart(request: Request, body: bytes) -> bytes:
    """The bytes of the ``file`` field of a multipart/form-data body."""
    parser = MultiPartParser(request.headers, _single_chunk(body), max_files=1, max_fields=16)
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


async def retry_once_if_replica_died(call: Callable[[], Awaitable], request_id: str):
    """Await ``call()``; if its replica died under it, call once more. Classification is
    idempotent, so a retry cannot do harm, and Serve routes it to a live replica."""
    try:
        return await call()
    except (RayActorError, ActorUnavailableError) as exc:
        logger.warning("request %s: replica failed (%s); retrying once", request_id, type(exc).__name__)
        return await call()


Handler = Callable[[object, Request, str], Awaitable[Response]]


def triage(exc: Exception, request_id: str) -> ServiceError:
    """The typed error for ``exc``. Only a fault is logged at ERROR and reported to error
    tracking; overload and recovery are logged at WARNING, and a client's mistake is left to the
    access log and the rejection counter, so a traffic spike cannot flood either."""
    error = as_service_error(exc)
    if isinstance(error, InternalError):
        logger.error("request %s failed: %r", request_id, exc, exc_info=exc)
        if not isinstance(exc, RayTaskError):  # a stage's own fault: reported there
            report_to_error_tracking(exc, request_id)
    elif isinstance(error, Unavailable):
        logger.warning("request %s: %s (%s)", request_id, error.message, type(exc).__name__)
    return error


def maps_errors(handler: Handler) -> Callable[[object, Request], Awaitable[Response]]:
    """Give a route its request ID, and turn any exception it raises into the JSON error response."""

    @wraps(handler)
    async def wrapper(self: Ingress, request: Request) -> Response:
        request_id = request_id_of(request)
        try:
            return await handler(self, request, request_id)
        except Exception as exc:
            return self._error_response(triage(exc, request_id), request_id)

    return wrapper


@serve.deployment(name="Ingress")
@serve.ingress()
class Ingress:
    def __init__(
        self,
        validation: DeploymentHandle,
        preprocessing: DeploymentHandle,
        inference: DeploymentHandle,
    ) -> None:
        self._settings = get_settings()
        init_error_tracking(self._settings)
        self._rejections = RejectionCounter()
        self._end_to_end = StageTimer("end_to_end")
        self._validation = validation
        self._preprocessing = preprocessing
        self._inference = inference

    def __serve_build_asgi_app__(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/classify", self.classify, methods=["POST"]),
                Route("/v1/model", self.model_info, methods=["GET"]),
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/readyz", self.readyz, methods=["GET"]),
            ],
            exception_handlers={HTTPException: self._http_exception},
        )

    def _error_response(self, error: ServiceError, request_id: str) -> Response:
        self._rejections.count(status_of(error), error.code)
        return error_response(error, request_id)

    @maps_errors
    async def classify(self, request: Request, request_id: str) -> Response:
        with self._end_to_end.time():
            return await self._classify(request, request_id)

    async def _classify(self, request: Request, request_id: str) -> Response:
        top_k = parse_top_k(request)
        refuse_impossible_upload(request)
        declared_type = media_type(request.headers.get("content-type", ""))
        is_multipart = declared_type == "multipart/form-data"
        limit = self._settings.max_upload_bytes
        body = await read_limited_body(request, limit + (MULTIPART_OVERHEAD_BYTES if is_multipart else 0))
        data = await file_from_multipart(request, body) if is_multipart else body

        validated = await retry_once_if_replica_died(
            lambda: self._validation.validate.remote(data, request_id), request_id
        )
        claimed = _DECLARED_IMAGE_TYPES.get(declared_type)
        if claimed and claimed != validated.format:
            logger.info(
                "request %s: Content-Type says %s but the bytes are %s; going by the bytes",
                request_id, claimed, validated.format,
            )
        prediction = None
        if self._settings.enable_model_cache:
            # A hit skips decoding as well as inference.
            prediction = await retry_once_if_replica_died(
                lambda: self._model_for(validated).lookup.remote(validated.sha256, top_k, request_id), request_id
            )
        if prediction is None:
            prediction = await retry_once_if_replica_died(
                lambda: self._decode_and_classify(data, validated, top_k, request_id), request_id
            )
        return JSONResponse(
            {
                "request_id": request_id,
                "model": {"name": prediction.model_name, "version": prediction.model_version},
                "image": {"format": validated.format, "width": prediction.width, "height": prediction.height},
                "predictions": [asdict(scored) for scored in prediction.classes],
                "cached": prediction.cached,
            }
        )

    def _decode_and_classify(
        self, data: bytes, validated: ValidatedImage, top_k: int, request_id: str
    ) -> DeploymentResponse:
        """Chain the two calls without awaiting in between: Serve hands the decoded array from
        the preprocessing replica to the inference replica without a round trip through here."""
        decoded = self._preprocessing.preprocess.remote(data, validated.format, request_id)
        return self._model_for(validated).classify.remote(decoded, validated.sha256, top_k, request_id)

    def _model_for(self, validated: ValidatedImage) -> DeploymentHandle:
        """The Inference handle keyed by the image's hash: with serve_config.yaml's consistent-hash
        router, the lookup and the classify of one image reach the replica whose cache owns it."""
        return self._inference.options(session_id=validated.sha256)

    @maps_errors
    async def model_info(self, request: Request, request_id: str) -> Response:
        return JSONResponse(await self._inference.describe.remote())

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @maps_errors
    async def readyz(self, request: Request, request_id: str) -> Response:
        stages = {
            "validation": self._validation,
            "preprocessing": self._preprocessing,
            "inference": self._inference,
        }
        timeout = self._settings.readiness_timeout_s

        async def stage_ready(handle: DeploymentHandle) -> bool:
            try:
                return bool(await asyncio.wait_for(handle.ready.remote(), timeout))
            except Exception:
                return False

        results = await asyncio.gather(*(stage_ready(h) for h in stages.values()))
        not_ready = [name for name, ok in zip(stages, results) if not ok]
        if not_ready:
            return self._error_response(
                Unavailable(f"not ready: {', '.join(not_ready)}"), request_id
            )
        return JSONResponse({"status": "ready"})

    async def _http_exception(self, request: Request, exc: HTTPException) -> Response:
        error: ServiceError
        if exc.status_code == 405:
            error = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
        else:
            error = NotFound(f"no route {request.url.path}")
        return self._error_response(error, request_id_of(request))
