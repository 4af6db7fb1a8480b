"""The route table, and the two things every part of the HTTP side agrees on about a request: which
protocol answers it, and the header that carries its ID.

Each route is marked here, and only here, as open (answered without an API key: load balancers
and orchestrators probe it) or not. The ingress and the Open Inference sub-app build their routes
from this table, ``serve_app/openapi.py`` documents exactly these routes, and the tests derive
from it what they expect.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import Scope

OPEN_INFERENCE_PREFIX = "/v2"
REQUEST_ID_HEADER = "x-request-id"


@dataclass(frozen=True)
class RouteSpec:
    path: str
    method: str
    handler: str  # the name of the method that answers it
    open: bool = False

    @property
    def is_open_inference(self) -> bool:
        return _is_open_inference_path(self.path)


def _v2_model_routes(prefix: str) -> tuple[RouteSpec, ...]:
    return (
        RouteSpec(prefix, "GET", "model_metadata"),
        RouteSpec(prefix + "/ready", "GET", "model_ready"),
        RouteSpec(prefix + "/infer", "POST", "infer"),
    )


ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("/", "GET", "page"),
    RouteSpec("/docs", "GET", "api_docs"),
    RouteSpec("/openapi.json", "GET", "openapi"),
    RouteSpec("/healthz", "GET", "healthz", open=True),
    RouteSpec("/readyz", "GET", "readyz", open=True),
    RouteSpec("/v1/classify", "POST", "classify"),
    RouteSpec("/v1/model", "GET", "model_info"),
    RouteSpec("/v1/models", "GET", "models"),
    RouteSpec("/v2", "GET", "server_metadata"),
    RouteSpec("/v2/health/live", "GET", "live", open=True),
    RouteSpec("/v2/health/ready", "GET", "ready", open=True),
    *_v2_model_routes("/v2/models/{model}"),
    *_v2_model_routes("/v2/models/{model}/versions/{version}"),
    # Triton's model repository extension (tritonclient's get_model_repository_index()).
    RouteSpec("/v2/repository/index", "POST", "repository_index"),
    RouteSpec("/v2/repository/models/{model}/load", "POST", "repository_load"),
    RouteSpec("/v2/repository/models/{model}/unload", "POST", "repository_load"),
)


def _is_open_inference_path(path: str) -> bool:
    return path.endswith(OPEN_INFERENCE_PREFIX) or OPEN_INFERENCE_PREFIX + "/" in path


def is_open_inference(scope: Scope) -> bool:
    """Whether the Open Inference Protocol answers this request, and so shapes its errors: its
    path is /v2 or lies under /v2/, after any application's route prefix.

    The full path is judged, in every place alike: at the edge Serve has not yet matched an
    application, so the route prefix is still part of the path and nothing says how long it is.
    """
    return _is_open_inference_path(scope["path"])


def request_id_of(request: Request) -> str:
    """The request's ID: Serve puts the client's X-Request-ID, or one it generates, on every
    request (and echoes it in the response), so logs, error bodies and Serve's access log agree."""
    return request.headers.get(REQUEST_ID_HEADER, "")
