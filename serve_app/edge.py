"""Middleware for Serve's HTTP proxy: what reaches the service, and what leaves it, at the edge.

Serve loads :func:`middlewares` in its proxy (and in ingress replicas that serve HTTP directly)
through ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH``, which ``serve_config.yaml`` sets under
``controller_options``. Three jobs no deployment can do, since the proxy acts before the ingress:

* drop the client's ``X-Request-Timeout-Seconds`` (and ``X-Request-Disconnect-Disabled``), with
  which a client could lengthen or switch off the server's ``request_timeout_s``;
* give the responses Serve writes itself (408 on its timeout, 503 or 429 on backpressure, as text)
  the service's JSON error body with the request ID;
* answer a JSON 503 with ``Retry-After`` when the ingress replica holding the request died (a node
  lost, say), where Serve would let its HTTP server answer a bare 500.

The 503s and 429s it writes are counted in ``ray_image_requests_total``, beside what the ingress
counts (serve_app/access.py), so that the counter agrees with what clients saw. Serve's 408 is not:
the ingress counts the request it cancelled.
"""

from __future__ import annotations

import json
import uuid

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.errors import RequestTimeout, ServiceError, Unavailable
from common.metrics import ANY_MODEL, RequestCounter, request_counter
from serve_app.http_errors import error_body, headers_for, open_inference_error_body, status_of
from serve_app.routes import REQUEST_ID_HEADER, is_open_inference

CLIENT_CONTROL_HEADERS = frozenset({b"x-request-timeout-seconds", b"x-request-disconnect-disabled"})
REQUEST_ID = REQUEST_ID_HEADER.encode()  # as ASGI carries header names
# What Serve's own plain-text error responses mean.
SERVE_STATUS_ERRORS: dict[int, type[ServiceError]] = {408: RequestTimeout, 429: Unavailable, 503: Unavailable}
SERVE_MESSAGES = {
    RequestTimeout: "the request did not complete within the server's time limit",
    Unavailable: "the service is at capacity; retry shortly",
}
LOST_REPLICA = Unavailable("the replica serving this request was lost; retry shortly")


class EdgeHeaders:
    """Drops the client's timeout controls, and gives every request an ID before Serve does, so
    that a response this middleware writes itself carries the same ID as the logs."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = [(k, v) for k, v in scope["headers"] if k.lower() not in CLIENT_CONTROL_HEADERS]
            if not any(k.lower() == REQUEST_ID for k, _ in headers):
                headers.append((REQUEST_ID, uuid.uuid4().hex.encode()))
            scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)


class JsonServeErrors:
    """Rewrites Serve's text/plain 408/429/503 into the JSON error body, and answers a JSON 503 when
    no response came at all; the ingress's own responses are JSON already and pass untouched."""

    def __init__(self, app: ASGIApp, requests: RequestCounter | None = None) -> None:
        self.app = app
        # The process's counter, fetched at the first count, not here: in an ingress replica that
        # is the ingress's own, tagged with its application (Ray tags a metric made inside a
        # replica), and Serve may build its middleware before the replica is up.
        self._requests = requests

    def _count(self, status: int) -> None:
        if self._requests is None:
            self._requests = request_counter()
        self._requests.count("-", status, ANY_MODEL)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: Message | None = None
        started = False

        async def rewriting_send(message: Message) -> None:
            nonlocal held, started
            if message["type"] == "http.response.start":
                started = True
                if _is_serve_error(message):
                    held = message  # Serve sends its error body in one message, right after this
                    return
            if message["type"] == "http.response.body" and held is not None:
                start, held = held, None
                error = SERVE_STATUS_ERRORS[start["status"]]
                if error is not RequestTimeout:
                    self._count(start["status"])
                await _send_json_error(send, start["status"], error(SERVE_MESSAGES[error]), start.get("headers", []),
                                       open_inference=is_open_inference(scope))
                return
            await send(message)

        await self.app(scope, receive, rewriting_send)
        if not started:
            self._count(status_of(LOST_REPLICA))
            headers = [(k.lower().encode(), v.encode()) for k, v in (headers_for(LOST_REPLICA) or {}).items()]
            await _send_json_error(send, status_of(LOST_REPLICA), LOST_REPLICA, headers,
                                   request_id=dict(scope["headers"]).get(REQUEST_ID, b""),
                                   open_inference=is_open_inference(scope))


def _is_serve_error(start: Message) -> bool:
    content_type = dict((k.lower(), v) for k, v in start.get("headers", [])).get(b"content-type", b"")
    return start["status"] in SERVE_STATUS_ERRORS and content_type.startswith(b"text/plain")


async def _send_json_error(send: Send, status: int, error: ServiceError, headers: list,
                           request_id: bytes | None = None, open_inference: bool = False) -> None:
    headers = [(k, v) for k, v in headers if k.lower() not in (b"content-type", b"content-length")]
    if request_id is None:
        request_id = next((v for k, v in headers if k.lower() == REQUEST_ID), b"")
    else:
        headers.append((REQUEST_ID, request_id))
    document = open_inference_error_body(error) if open_inference else error_body(error, request_id.decode("latin-1"))
    body = json.dumps(document).encode()
    headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def middlewares() -> list[Middleware]:
    # Serve wraps these outside its own request-ID middleware, the last one outermost.
    return [Middleware(JsonServeErrors), Middleware(EdgeHeaders)]
