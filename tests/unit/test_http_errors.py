"""Typed errors to HTTP (serve_app/http_errors.py): statuses, headers, unwrapping what Ray adds,
and the exception handlers, driven through a Starlette app whose routes raise."""

from __future__ import annotations

import pytest
from ray.exceptions import ActorUnavailableError, RayTaskError
from ray.serve.exceptions import BackPressureError
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from common import errors
from common.metrics import RejectionCounter
from serve_app.http_errors import (
    ErrorResponses,
    as_service_error,
    headers_for,
    open_inference_status_of,
    status_of,
)
from serve_app.routes import is_open_inference


@pytest.mark.parametrize(("error", "status"), [
    (errors.InvalidParameter("top_k=0"), 400), (errors.EmptyBody("empty"), 400),
    (errors.MalformedMultipart("no file"), 400), (errors.Unauthorized("no key"), 401),
    (errors.NotFound("no route"), 404), (errors.MethodNotAllowed("GET"), 405),
    (errors.RequestTimeout("slow"), 408), (errors.PayloadTooLarge("big"), 413),
    (errors.UnsupportedMediaType("avi"), 415), (errors.UnsupportedContentEncoding("gzip"), 415),
    (errors.UndecodableImage("truncated"), 422), (errors.ImageTooLarge("bomb"), 422),
    (errors.InvalidImageDimensions("0x0"), 422), (errors.DecodeTimeout("slow"), 422),
    (errors.RateLimited("over", 2), 429), (errors.InternalError("bug"), 500), (errors.Unavailable("busy"), 503),
])
def test_each_typed_error_has_its_status(error, status):
    assert status_of(error) == status


@pytest.mark.parametrize(("error", "status"), [
    (errors.UnsupportedMediaType("avi"), 400), (errors.UndecodableImage("truncated"), 400),
    (errors.PayloadTooLarge("big"), 400), (errors.NotFound("model"), 404), (errors.Unauthorized("key"), 401),
    (errors.RateLimited("over"), 429), (errors.InternalError("bug"), 500), (errors.Unavailable("busy"), 503),
])
def test_the_open_inference_protocol_folds_client_errors_into_400(error, status):
    assert open_inference_status_of(error) == status


def test_headers_say_when_to_retry_and_how_to_authenticate():
    assert headers_for(errors.RateLimited("over", retry_after_s=1.2)) == {"Retry-After": "2"}
    assert headers_for(errors.RateLimited("over", retry_after_s=0.1)) == {"Retry-After": "1"}
    assert headers_for(errors.Unavailable("busy")) == {"Retry-After": "1"}
    assert headers_for(errors.Unauthorized("no key")) == {"WWW-Authenticate": "Bearer"}
    assert headers_for(errors.InvalidParameter("top_k=0")) is None


def test_ray_wrappers_are_unwrapped_and_anything_else_is_internal_or_unavailable():
    refusal = errors.UnsupportedMediaType("not an image")
    assert as_service_error(RayTaskError("validate", "traceback", refusal)) is refusal
    assert as_service_error(RayTaskError("validate", "traceback", refusal).as_instanceof_cause()) is refusal
    assert isinstance(as_service_error(RayTaskError("classify", "traceback", KeyError("bug"))), errors.InternalError)
    assert isinstance(as_service_error(BackPressureError(num_queued_requests=8, max_queued_requests=8)),
                      errors.Unavailable)
    assert isinstance(as_service_error(ActorUnavailableError("restarting", actor_id=None)), errors.Unavailable)
    assert isinstance(as_service_error(KeyError("bug")), errors.InternalError)


@pytest.mark.parametrize(("path", "speaks_v2"), [
    ("/v2", True), ("/v2/health/ready", True), ("/v2/models/m/infer", True), ("/secured/v2/models/m", True),
    ("/v1/classify", False), ("/", False), ("/v2x", False), ("/secured/v1/model", False),
])
def test_one_rule_tells_an_open_inference_request(path, speaks_v2):
    assert is_open_inference({"type": "http", "path": path}) is speaks_v2


def raising(exc: Exception):
    async def endpoint(request):
        raise exc
    return endpoint


@pytest.fixture
def client() -> TestClient:
    handlers = ErrorResponses(RejectionCounter()).handlers
    v2 = Starlette(routes=[Route("/models/m/infer", raising(errors.UndecodableImage("truncated")), methods=["POST"])],
                   exception_handlers=handlers)
    app = Starlette(routes=[
        Route("/v1/classify", raising(errors.UnsupportedMediaType("not an image")), methods=["POST"]),
        Route("/v1/model", raising(errors.Unavailable("the model is still loading"))),
        Mount("/v2", app=v2),
    ], exception_handlers=handlers)
    return TestClient(app, headers={"X-Request-ID": "req-1"})


def test_a_typed_error_is_the_json_error_body_with_the_request_id(client):
    response = client.post("/v1/classify")
    assert response.status_code == 415
    assert response.json() == {"error": {"code": "unsupported_media_type", "message": "not an image",
                                         "request_id": "req-1"}}


def test_an_error_takes_the_headers_its_status_calls_for(client):
    response = client.get("/v1/model")
    assert (response.status_code, response.headers["Retry-After"]) == (503, "1")
    assert response.json()["error"]["message"] == "the model is still loading"


def test_under_v2_an_error_is_the_protocol_body(client):
    response = client.post("/v2/models/m/infer")
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "truncated"}
    assert client.get("/v2/nothing").json() == {"error": "no route /v2/nothing"}


def test_unknown_routes_and_wrong_methods_are_json_404_and_405(client):
    assert client.get("/v1/nothing").json()["error"]["code"] == "not_found"
    response = client.get("/v1/classify")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"
