"""The Open Inference Protocol (v2, REST) routes: a Starlette sub-app mounted at /v2.

Thin handlers, as ``/v1`` has: each reads the request, asks the data plane, and encodes the answer
with ``serve_app/open_inference_codec.py``. Errors take the protocol's body (``{"error": ...}``)
from the shared exception handlers, which know a v2 request by its path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import metadata

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from common.errors import BadRequest, NotFound
from common.metrics import StageTimer
from common.settings import Settings
from serve_app import open_inference_codec as codec
from serve_app.data_plane import DataPlane
from serve_app.routes import OPEN_INFERENCE_PREFIX, ROUTES, RouteSpec, request_id_of
from serve_app.uploads import read_limited_body

SERVER_NAME = "image-classification-service"
SERVER_VERSION = metadata.version("image-classification-service")
# Room for base64 (4/3) and the JSON around the images.
JSON_OVERHEAD_BYTES = 65536


class OpenInference:
    def __init__(self, plane: DataPlane, settings: Settings, end_to_end: StageTimer) -> None:
        self._plane = plane
        self._max_images = settings.max_batch_images
        self._max_image_bytes = settings.max_upload_bytes
        self._end_to_end = end_to_end

    def routes(self, middleware: Callable[[RouteSpec], Sequence[Middleware]],
               exception_handlers: dict) -> list[BaseRoute]:
        """The v2 routes of the route table, each wrapped in ``middleware(route)``: the sub-app at
        /v2, and /v2 itself, which a mount alone would redirect to /v2/."""

        def route(spec: RouteSpec, path: str) -> Route:
            return Route(path, getattr(self, spec.handler), methods=[spec.method], middleware=middleware(spec))

        specs = [spec for spec in ROUTES if spec.is_open_inference]
        bare = [route(spec, spec.path) for spec in specs if spec.path == OPEN_INFERENCE_PREFIX]
        mounted = [route(spec, spec.path.removeprefix(OPEN_INFERENCE_PREFIX))
                   for spec in specs if spec.path != OPEN_INFERENCE_PREFIX]
        sub_app = Starlette(routes=mounted, exception_handlers=exception_handlers)
        return [*bare, Mount(OPEN_INFERENCE_PREFIX, app=sub_app)]

    async def server_metadata(self, request: Request) -> Response:
        return JSONResponse({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": codec.EXTENSIONS})

    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(self, request: Request) -> Response:
        await self._plane.check_ready()
        return JSONResponse({"ready": True})

    async def model_ready(self, request: Request) -> Response:
        model = await self._model_named(request)
        await self._plane.check_ready(request.path_params["model"])
        return JSONResponse({"name": model["name"], "ready": True})

    async def model_metadata(self, request: Request) -> Response:
        model = await self._model_named(request)
        return JSONResponse(codec.model_metadata(model["name"], model["num_classes"], model["runtime"]))

    async def infer(self, request: Request) -> Response:
        model = await self._model_named(request)
        request_id = request_id_of(request)
        with self._end_to_end.time():
            body = await read_limited_body(request.headers, request.stream(),
                                           self._max_image_bytes * self._max_images * 4 // 3 + JSON_OVERHEAD_BYTES)
            infer = codec.parse_infer_request(body, request.headers.get(codec.HEADER_LENGTH),
                                              self._max_images, self._max_image_bytes)
            top_k = infer.classification or model["num_classes"]
            # One image after another: Serve's consistent-hash router loses a second pending call to
            # the same deployment made concurrently within one request (both carry the request's
            # internal ID), and on a CPU-bound graph concurrency inside a request gains little.
            predictions = [await self._plane.classify(data, top_k, request_id, model=model["name"])
                           for data in infer.images]
            payload, headers = codec.encode_infer_response(infer, model["name"], predictions, model["num_classes"])
        return Response(payload, headers=headers)

    async def repository_index(self, request: Request) -> Response:
        """Triton's repository extension: every served model, READY; a 503 while one still loads."""
        models = await self._plane.models(request_id_of(request))
        return JSONResponse([{"name": m["name"], "version": codec.VERSION, "state": "READY", "reason": ""}
                             for m in models])

    async def repository_load(self, request: Request) -> Response:
        # A 400, as Triton answers a load or unload that its model control mode does not allow.
        raise BadRequest("loading and unloading models is not supported: the served models are the "
                         "repository's in serve_config.yaml, loaded at start-up")

    async def _model_named(self, request: Request) -> dict:
        """The served model the path names, if it has the version asked for; else :class:`NotFound`."""
        request_id = request_id_of(request)
        model = await self._plane.model_named(request.path_params["model"], request_id)
        name = request.state.model = model["name"]
        version = request.path_params.get("version", codec.VERSION)
        if version != codec.VERSION:
            raise NotFound(f"model {name!r} has no version {version!r}; its one version is {codec.VERSION!r}")
        return model
