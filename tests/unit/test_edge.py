"""The middleware Serve runs in its proxy (serve_app/edge.py), driven through Starlette's test
client around small ASGI apps that answer the way Serve's proxy does."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from serve_app.edge import JsonServeErrors, middlewares


def as_serve_wraps(app) -> TestClient:
    """The middlewares around ``app`` as Serve applies them: each wraps the previous, the last outermost."""
    for middleware in middlewares():
        app = middleware.cls(app, *middleware.args, **middleware.kwargs)
    return TestClient(app)


def client_for(endpoint) -> TestClient:
    return as_serve_wraps(Starlette(routes=[Route("/", endpoint, methods=["GET", "POST"]),
                                            Route("/v2/models/m/infer", endpoint, methods=["POST"])]))


def echo_timeout_headers(request):
    return JSONResponse({k: v for k, v in request.headers.items() if k.startswith("x-request")})


def test_client_timeout_controls_never_reach_serve_and_every_request_gets_an_id():
    seen = client_for(echo_timeout_headers).get(
        "/", headers={"X-Request-Timeout-Seconds": "0", "X-Request-Disconnect-Disabled": "?1"}
    ).json()
    assert set(seen) == {"x-request-id"} and len(seen["x-request-id"]) == 32


def test_a_client_request_id_is_kept():
    seen = client_for(echo_timeout_headers).get("/", headers={"X-Request-ID": "mine-1"}).json()
    assert seen == {"x-request-id": "mine-1"}


@pytest.mark.parametrize(("status", "code"), [(408, "request_timeout"), (503, "service_unavailable"),
                                              (429, "service_unavailable")])
def test_serve_text_errors_become_the_json_error_body(status, code):
    def serve_refusal(request):
        return PlainTextResponse("Request dropped due to backpressure", status_code=status,
                                 headers={"X-Request-ID": "req-7", "Retry-After": "1"})

    response = client_for(serve_refusal).get("/")
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["request_id"] == "req-7"


def test_serve_errors_on_v2_routes_get_the_protocol_body():
    def serve_refusal(request):
        return PlainTextResponse("Request dropped due to backpressure", status_code=503)

    response = client_for(serve_refusal).post("/v2/models/m/infer")
    assert response.status_code == 503
    assert response.json() == {"error": "the service is at capacity; retry shortly"}


def test_the_ingress_own_json_errors_pass_untouched():
    def ingress_error(request):
        return JSONResponse({"error": {"code": "service_unavailable", "message": "not ready: inference",
                                       "request_id": "r"}}, status_code=503)

    assert client_for(ingress_error).get("/").json()["error"]["message"] == "not ready: inference"


def test_no_response_at_all_becomes_a_json_503_to_retry():
    async def lost_replica(scope, receive, send):  # Serve's proxy when the ingress replica died
        return None

    response = as_serve_wraps(lost_replica).get("/", headers={"X-Request-ID": "req-9"})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"] == {"code": "service_unavailable", "request_id": "req-9",
                                        "message": "the replica serving this request was lost; retry shortly"}


class RecordingCounter:
    def __init__(self):
        self.counted: list[tuple[str, int, str]] = []

    def count(self, key_id: str, status: int, model: str) -> None:
        self.counted.append((key_id, status, model))


def test_the_answers_the_edge_writes_itself_are_counted_once_and_no_others():
    """Serve's backpressure refusals and a lost replica's 503 never reach the ingress's counter,
    so the edge counts them; a 408 is counted by the ingress whose handler Serve cancelled, and
    the ingress's own answers by the ingress."""
    def serve_answer(request):
        status = int(request.query_params["status"])
        if request.query_params.get("json"):
            return JSONResponse({"error": {"code": "service_unavailable"}}, status_code=status)
        return PlainTextResponse("from Serve", status_code=status)

    async def lost_replica(scope, receive, send):
        return None

    requests = RecordingCounter()
    app = Starlette(routes=[Route("/", serve_answer)])
    client = TestClient(JsonServeErrors(app, requests))
    for query in ("status=503", "status=429", "status=408", "status=503&json=1", "status=200"):
        client.get("/?" + query)
    TestClient(JsonServeErrors(lost_replica, requests)).get("/")
    assert requests.counted == [("-", 503, "-"), ("-", 429, "-"), ("-", 503, "-")]
