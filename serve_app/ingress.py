"""The HTTP ingress deployment: the Starlette app built from the route table, and the ``/v1``,
health, upload-page and API-document routes.

Route handlers stay thin: ``serve_app/uploads.py`` reads the upload, ``serve_app/data_plane.py``
calls the graph, ``serve_app/open_inference.py`` holds the /v2 routes, ``serve_app/access.py``
admits and counts each request, and ``serve_app/http_errors.py`` answers whatever a route raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from importlib import resources

from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from common.console import show_on_console
from common.contracts import InputGeometry, Prediction
from common.error_tracking import init_error_tracking
from common.metrics import CacheAnswerCounter, RejectionCounter, StageTimer, request_counter
from common.settings import get_settings
from deployments.inference.repository import entry_from_settings
from serve_app.access import AccessMiddleware, access_control
from serve_app.data_plane import DataPlane, ServedModel
from serve_app.http_errors import ErrorResponses
from serve_app.open_inference import SERVER_VERSION, OpenInference
from serve_app.openapi import openapi_document
from serve_app.routes import ROUTES, RouteSpec, request_id_of
from serve_app.uploads import parse_top_k, read_upload

OPENAPI = openapi_document(SERVER_VERSION)
# The upload page and the API docs page: self-contained HTML, no external scripts, fonts or styles.
_STATIC = {name: (resources.files("serve_app") / "static" / name).read_text() for name in ("index.html", "docs.html")}


def classification(prediction: Prediction, request_id: str) -> dict:
    """The ``/v1/classify`` response body."""
    return {
        "request_id": request_id,
        "model": {"name": prediction.model_name, "version": prediction.model_version},
        "image": {"format": prediction.format, "width": prediction.width, "height": prediction.height},
        "predictions": [asdict(scored) for scored in prediction.classes],
        "cached": prediction.cached,
    }


@serve.deployment(name="Ingress")
@serve.ingress()
class Ingress:
    def __init__(
        self,
        validation: DeploymentHandle,
        preprocessing: DeploymentHandle,
        inference: DeploymentHandle,
        more_models: dict[str, tuple[DeploymentHandle, InputGeometry]] | None = None,
        *,
        default_model: str | None = None,
    ) -> None:
        """``inference`` serves the default model, named ``default_model`` (by default the one
        ``MODEL_NAME`` names, as in a graph built without a repository); ``more_models`` the
        repository's others, by name, each with its input geometry."""
        show_on_console()
        self._settings = get_settings()
        init_error_tracking(self._settings)
        self._plane = DataPlane(
            validation, preprocessing, inference,
            default_model=default_model or entry_from_settings(self._settings).name,
            cache_enabled=self._settings.enable_model_cache,
            cache_answers=CacheAnswerCounter(),
            readiness_timeout_s=self._settings.readiness_timeout_s,
            stalled_call_retry_s=self._settings.stalled_call_retry_s,
            more_models={name: ServedModel(*served) for name, served in (more_models or {}).items()},
        )
        self._end_to_end = StageTimer("end_to_end")
        self._errors = ErrorResponses(RejectionCounter())
        self._requests = request_counter()
        self._keys = access_control(self._settings)

    def __serve_build_asgi_app__(self) -> Starlette:
        v2 = OpenInference(self._plane, self._settings, self._end_to_end)
        v1 = [Route(spec.path, getattr(self, spec.handler), methods=[spec.method], middleware=self._middleware(spec))
              for spec in ROUTES if not spec.is_open_inference]
        return Starlette(routes=[*v1, *v2.routes(self._middleware, self._errors.handlers)],
                         exception_handlers=self._errors.handlers)

    def _middleware(self, spec: RouteSpec) -> Sequence[Middleware]:
        """Around every route: its request ID, the API key check unless the route is open, and
        the count of answers by key and status."""
        keys = None if spec.open else self._keys
        return [Middleware(AccessMiddleware, keys=keys, requests=self._requests, on_error=self._errors.respond)]

    async def page(self, request: Request) -> Response:
        return HTMLResponse(_STATIC["index.html"])

    async def api_docs(self, request: Request) -> Response:
        return HTMLResponse(_STATIC["docs.html"])

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(OPENAPI)

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        await self._plane.check_ready()
        return JSONResponse({"status": "ready"})

    async def model_info(self, request: Request) -> Response:
        return JSONResponse(await self._plane.model(request_id_of(request)))

    async def models(self, request: Request) -> Response:
        return JSONResponse({"models": await self._plane.models(request_id_of(request))})

    async def classify(self, request: Request) -> Response:
        request_id = request_id_of(request)
        with self._end_to_end.time() as timed:
            top_k = parse_top_k(request.query_params.get("top_k"))
            upload = await read_upload(request, self._settings.max_upload_bytes)
            # An empty ?model= is an absent one: the default model.
            prediction = await self._plane.classify(upload.data, top_k, request_id, upload.claimed_format,
                                                    request.query_params.get("model") or None)
            request.state.model = timed["model"] = prediction.model_name
            return JSONResponse(classification(prediction, request_id))
