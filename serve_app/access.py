"""Access control as ASGI middleware, one instance around each route: the request's ID, the
caller's API key and its rate limit (where the route is not open), and the count of answers by key
and status. The keys themselves, their file and the token buckets are in ``serve_app/keys.py``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common.console import CONSOLE
from common.errors import ServiceError
from common.metrics import ANY_MODEL, RequestCounter
from common.settings import Settings
from serve_app.keys import AccessControl, parse_key_file
from serve_app.routes import REQUEST_ID_HEADER

logger = logging.getLogger("ray.serve")

ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]


def access_control(settings: Settings) -> AccessControl | None:
    """API keys and rate limits from the settings; None (and one clear log line) when keys are off."""
    if settings.api_keys_file is None:
        logger.warning("API keys are off: every route is open to anyone who can reach the port (set API_KEYS_FILE)",
                       extra=CONSOLE)
        return None
    hashes = parse_key_file(Path(settings.api_keys_file))
    logger.info("API keys on: %d key(s) from %s; rate limit %s", len(hashes), settings.api_keys_file,
                f"{settings.rate_limit_rps:g}/s per key per ingress replica, burst {settings.rate_limit_burst}"
                if settings.rate_limit_rps else "off", extra=CONSOLE)
    return AccessControl(hashes, settings.rate_limit_rps, settings.rate_limit_burst)


class AccessMiddleware:
    """Admits a request to one route, or refuses it with 401 or 429, and counts the answer.

    ``keys`` is None where the route is open or API keys are off. A refusal is answered by
    ``on_error``, the app's exception handler, as Starlette's own AuthenticationMiddleware does;
    so is a fault that no exception handler took, so that it is counted with the 500 it gets.
    """

    def __init__(self, app: ASGIApp, *, keys: AccessControl | None, requests: RequestCounter,
                 on_error: ErrorHandler) -> None:
        self.app = app
        self._keys = keys
        self._requests = requests
        self._on_error = on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = _ensure_request_id(scope)
        request = Request(scope)
        key_id = "-"
        status: int | None = None

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            answer = self.app
            if self._keys is not None:
                try:
                    key_id = self._keys.identify(request.headers.get("authorization"))
                    logger.info("request %s: key %s", request_id, key_id)
                    self._keys.limit(key_id)
                except ServiceError as refusal:
                    answer = await self._on_error(request, refusal)
            await answer(scope, receive, counting_send)
        except asyncio.CancelledError:
            # Serve cancels the handler when the request runs past request_timeout_s, and answers
            # the client 408 itself (or the client went away, and got nothing): counted as 408,
            # so the counter agrees with what clients saw.
            status = status or 408
            raise
        except Exception as fault:
            if status is not None:  # a response already begun cannot be replaced
                raise
            await (await self._on_error(request, fault))(scope, receive, counting_send)
        finally:
            # The model a handler resolved the request to (request.state.model), if any.
            self._requests.count(key_id, status or 500, scope.get("state", {}).get("model", ANY_MODEL))


def _ensure_request_id(scope: Scope) -> str:
    """The X-Request-ID Serve set, or, where the app runs without Serve's HTTP front, a new one
    added to the request, so that every part of the ingress reads the same ID."""
    header = REQUEST_ID_HEADER.encode()
    for name, value in scope["headers"]:
        if name.lower() == header:
            return value.decode("latin-1")
    request_id = uuid.uuid4().hex
    scope["headers"] = [*scope["headers"], (header, request_id.encode())]
    return request_id
