"""The request counter of the access middleware counts every request with the status its client saw."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from starlette.responses import PlainTextResponse

from serve_app.access import AccessMiddleware


class CountedRequests:
    """Records what the middleware counts, in place of the Prometheus counter."""

    def __init__(self) -> None:
        self.counted: list[tuple[str, int, str]] = []

    def count(self, key_id: str, status: int, model: str) -> None:
        self.counted.append((key_id, status, model))


def scope() -> dict:
    return {"type": "http", "method": "POST", "path": "/v1/classify", "headers": [], "query_string": b"",
            "state": {"model": "efficientnet-lite0"}}


async def never_answers(scope, receive, send) -> None:
    await asyncio.Event().wait()


async def answers_200(scope, receive, send) -> None:
    await PlainTextResponse("ok")(scope, receive, send)


async def unused_error_handler(request, exc):
    raise AssertionError("no error to answer")


async def run(app, cancel_after_s: float | None = None) -> list[tuple[str, int, str]]:
    requests = CountedRequests()
    middleware = AccessMiddleware(app, keys=None, requests=requests, on_error=unused_error_handler)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        pass

    task = asyncio.create_task(middleware(scope(), receive, send))
    if cancel_after_s is not None:
        await asyncio.sleep(cancel_after_s)
        task.cancel()
    with pytest.raises(asyncio.CancelledError) if cancel_after_s is not None else contextlib.nullcontext():
        await task
    return requests.counted


def test_an_answered_request_is_counted_with_its_status_and_model():
    assert asyncio.run(run(answers_200)) == [("-", 200, "efficientnet-lite0")]


def test_a_request_serve_cancels_at_its_timeout_is_counted_as_the_408_its_client_got():
    assert asyncio.run(run(never_answers, cancel_after_s=0.01)) == [("-", 408, "efficientnet-lite0")]
