"""The HTTP ingress deployment: the routes (``/v1``, the Open Inference Protocol under ``/v2``, the
upload page and the API document), API keys, reading the body, error mapping and the response.

It never decodes an image; it hashes the bytes and hands them to the inference, validation and
preprocessing deployments through their DeploymentHandles.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from functools import wraps
from importlib import resources
from importlib.metadata import version
from pathlib import Path

from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError, RayTaskError
from ray.serve.handle import DeploymentHandle
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from common.contracts import Prediction
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
from common.metrics import RejectionCounter, RequestCounter, StageTimer
from common.settings import Settings, get_settings
from serve_app import open_inference
from serve_app.http_errors import (
    as_service_error,
    error_response,
    open_inference_error_response,
    open_inference_status_of,
    status_of,
)
from serve_app.keys import AccessControl, parse_key_file
from serve_app.openapi import openapi_document

logger = logging.getLogger("ray.serve")

DEFAULT_TOP_K = 5
READINESS_CACHE_S = 1.0
# Open without an API key: load balancers and orchestrators probe them.
OPEN_HANDLERS = {"healthz", "readyz", "v2_live", "v2_ready"}
# (path, method, Ingress method): every route the service answers, described in serve_app/openapi.py.
ROUTES = [
    ("/", "GET", "page"),
    ("/docs", "GET", "api_docs"),
    ("/openapi.json", "GET", "openapi"),
    ("/healthz", "GET", "healthz"),
    ("/readyz", "GET", "readyz"),
    ("/v1/classify", "POST", "classify"),
    ("/v1/model", "GET", "model_info"),
    ("/v2", "GET", "v2_server_metadata"),
    ("/v2/health/live", "GET", "v2_live"),
    ("/v2/health/ready", "GET", "v2_ready"),
    *[route for model in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}") for route in (
        (model, "GET", "v2_model_metadata"),
        (model + "/ready", "GET", "v2_model_ready"),
        (model + "/infer", "POST", "v2_infer"),
    )],
]
SERVER_NAME = "image-classification-service"
SERVER_VERSION = version("image-classification-service")
OPENAPI = openapi_document(SERVER_VERSION)
# The upload page and the API docs page: self-contained HTML, no external scripts, fonts or styles.
_STATIC = {name: (resources.files("serve_app") / "static" / name).read_text() for name in ("index.html", "docs.html")}
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


def is_open_inference(request: Request) -> bool:
    return request.scope["path"].removeprefix(request.scope.get("root_path", "")).startswith("/v2")


def maps_errors(handler: Handler) -> Callable[[object, Request], Awaitable[Response]]:
    """Give a route its request ID, check the caller's API key (health routes stay open), count
    the request by key and status, and turn any exception into the route protocol's JSON error."""
    needs_key = handler.__name__ not in OPEN_HANDLERS

    @wraps(handler)
    async def wrapper(self: Ingress, request: Request) -> Response:
        request_id, key_id = request_id_of(request), "-"
        try:
            if needs_key and self._access is not None:
                key_id = self._access.identify(request.headers.get("authorization"))
                logger.info("request %s: key %s", request_id, key_id)
                self._access.limit(key_id)
            response = await handler(self, request, request_id)
        except Exception as exc:
            response = self._error_response(triage(exc, request_id), request_id, request)
        self._requests.count(key_id, response.status_code)
        return response

    return wrapper


def access_control(settings: Settings) -> AccessControl | None:
    """API keys and rate limits from the settings; None (and one clear log line) when keys are off."""
    if settings.api_keys_file is None:
        logger.warning("API keys are off: every route is open to anyone who can reach the port (set API_KEYS_FILE)")
        return None
    hashes = parse_key_file(Path(settings.api_keys_file))
    logger.info("API keys on: %d key(s) from %s; rate limit %s", len(hashes), settings.api_keys_file,
                f"{settings.rate_limit_rps:g}/s per key per ingress replica, burst {settings.rate_limit_burst}"
                if settings.rate_limit_rps else "off")
    return AccessControl(hashes, settings.rate_limit_rps, settings.rate_limit_burst)


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
        self._requests = RequestCounter()
        self._access = access_control(self._settings)
        self._end_to_end = StageTimer("end_to_end")
        self._validation = validation
        self._preprocessing = preprocessing
        self._inference = inference
        self._model_description: dict | None = None
        self._readiness: tuple[float, str | None] = (float("-inf"), None)

    def __serve_build_asgi_app__(self) -> Starlette:
        return Starlette(
            routes=[Route(path, getattr(self, handler), methods=[method]) for path, method, handler in ROUTES],
            exception_handlers={HTTPException: self._http_exception},
        )

    @maps_errors
    async def page(self, request: Request, request_id: str) -> Response:
        return HTMLResponse(_STATIC["index.html"])

    @maps_errors
    async def api_docs(self, request: Request, request_id: str) -> Response:
        return HTMLResponse(_STATIC["docs.html"])

    @maps_errors
    async def openapi(self, request: Request, request_id: str) -> Response:
        return JSONResponse(OPENAPI)

    def _error_response(self, error: ServiceError, request_id: str, request: Request) -> Response:
        if is_open_inference(request):
            self._rejections.count(open_inference_status_of(error), error.code)
            return open_inference_error_response(error)
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
        prediction = await self._predict(data, top_k, request_id, declared_type)
        return JSONResponse(
            {
                "request_id": request_id,
                "model": {"name": prediction.model_name, "version": prediction.model_version},
                "image": {"format": prediction.format, "width": prediction.width, "height": prediction.height},
                "predictions": [asdict(scored) for scored in prediction.classes],
                "cached": prediction.cached,
            }
        )

    async def _predict(self, data: bytes, top_k: int, request_id: str, declared_type: str = "") -> Prediction:
        """One image through the graph. Its SHA-256 picks the Inference replica that owns it, whose
        cache may answer at once; only on a miss are the bytes validated, decoded and classified."""
        sha256 = hashlib.sha256(data).hexdigest()
        # With serve_config.yaml's consistent-hash router, the lookup and the classify of one image
        # reach the replica whose cache owns it.
        model = self._inference.options(session_id=sha256)
        if self._settings.enable_model_cache:
            prediction = await retry_once_if_replica_died(
                lambda: model.lookup.remote(sha256, top_k, request_id), request_id
            )
            if prediction is not None:
                return prediction
        validated = await retry_once_if_replica_died(
            lambda: self._validation.validate.remote(data, request_id), request_id
        )
        claimed = _DECLARED_IMAGE_TYPES.get(declared_type)
        if claimed and claimed != validated.format:
            logger.info(
                "request %s: Content-Type says %s but the bytes are %s; going by the bytes",
                request_id, claimed, validated.format,
            )
        # Chained, so that one retry covers both calls. With gRPC between deployments (the
        # throughput mode) Serve resolves the decoded array here and sends it on; with Ray actor
        # calls it would pass from replica to replica by reference.
        return await retry_once_if_replica_died(
            lambda: model.classify.remote(
                self._preprocessing.preprocess.remote(data, validated.format, request_id), sha256, top_k, request_id
            ),
            request_id,
        )

    @maps_errors
    async def model_info(self, request: Request, request_id: str) -> Response:
        return JSONResponse(await self._model())

    @maps_errors
    async def healthz(self, request: Request, request_id: str) -> Response:
        return JSONResponse({"status": "ok"})

    @maps_errors
    async def readyz(self, request: Request, request_id: str) -> Response:
        await self._check_ready()
        return JSONResponse({"status": "ready"})

    async def _check_ready(self) -> None:
        """Raise :class:`Unavailable` naming the stages that do not pass their self-test in time.

        The answer is kept for READINESS_CACHE_S: the readiness routes need no API key, and each
        check runs a forward pass, so polling must not take the model's slots from real requests.
        """
        checked_at, failure = self._readiness
        if time.monotonic() - checked_at > READINESS_CACHE_S:
            failure = await self._stage_failures()
            self._readiness = (time.monotonic(), failure)
        if failure:
            raise Unavailable(failure)

    async def _stage_failures(self) -> str | None:
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
        return f"not ready: {', '.join(not_ready)}" if not_ready else None

    async def _model(self) -> dict:
        """What the model replica reports about itself (``/v1/model``), asked once per ingress."""
        if self._model_description is None:
            try:
                self._model_description = await asyncio.wait_for(
                    self._inference.describe.remote(), self._settings.readiness_timeout_s
                )
            except asyncio.TimeoutError:
                raise Unavailable("the model is still loading; retry shortly") from None
        return self._model_description

    async def _model_named(self, request: Request) -> dict:
        """The served model, if the path names it and its one version; else :class:`NotFound`."""
        model = await self._model()
        name, version = request.path_params["model"], request.path_params.get("version", open_inference.VERSION)
        if name != model["name"]:
            raise NotFound(f"unknown model {name!r}; this server serves {model['name']!r}")
        if version != open_inference.VERSION:
            raise NotFound(f"model {name!r} has no version {version!r}; its one version is {open_inference.VERSION!r}")
        return model

    @maps_errors
    async def v2_server_metadata(self, request: Request, request_id: str) -> Response:
        return JSONResponse({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": open_inference.EXTENSIONS})

    @maps_errors
    async def v2_live(self, request: Request, request_id: str) -> Response:
        return JSONResponse({"live": True})

    @maps_errors
    async def v2_ready(self, request: Request, request_id: str) -> Response:
        await self._check_ready()
        return JSONResponse({"ready": True})

    @maps_errors
    async def v2_model_ready(self, request: Request, request_id: str) -> Response:
        model = await self._model_named(request)
        await self._check_ready()
        return JSONResponse({"name": model["name"], "ready": True})

    @maps_errors
    async def v2_model_metadata(self, request: Request, request_id: str) -> Response:
        model = await self._model_named(request)
        return JSONResponse(open_inference.model_metadata(model["name"], model["num_classes"], model["runtime"]))

    @maps_errors
    async def v2_infer(self, request: Request, request_id: str) -> Response:
        model = await self._model_named(request)
        with self._end_to_end.time():
            batch = self._settings.max_batch_images
            # Room for base64 (4/3) and the JSON around the images.
            body = await read_limited_body(request, self._settings.max_upload_bytes * batch * 4 // 3 + 65536)
            infer = open_inference.parse_infer_request(
                body, request.headers.get(open_inference.HEADER_LENGTH), batch, self._settings.max_upload_bytes
            )
            top_k = infer.classification or model["num_classes"]
            # One image after another: Serve's consistent-hash router loses a second pending call to
            # the same deployment made concurrently within one request (both carry the request's
            # internal ID), and on a CPU-bound graph concurrency inside a request gains little.
            predictions = [await self._predict(data, top_k, request_id) for data in infer.images]
            payload, headers = open_inference.encode_infer_response(
                infer, model["name"], predictions, model["num_classes"]
            )
        return Response(payload, headers=headers)

    async def _http_exception(self, request: Request, exc: HTTPException) -> Response:
        error: ServiceError
        if exc.status_code == 405:
            error = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}")
        else:
            error = NotFound(f"no route {request.url.path}")
        return self._error_response(error, request_id_of(request), request)
