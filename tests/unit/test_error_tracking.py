"""Sentry: an injected server fault is captured with its request ID tag; a client error is not.

Uses the real sentry-sdk with a local transport that keeps envelopes in memory instead of sending.
"""

import asyncio

import pytest
import sentry_sdk
from sentry_sdk.transport import Transport

from serve_app.error_tracking import init_error_tracking, reports_unexpected_errors
from serve_app.errors import UnsupportedMediaType
from serve_app.settings import Settings


class MemoryTransport(Transport):
    def __init__(self, options=None):
        super().__init__(options)
        self.events: list[dict] = []

    def capture_envelope(self, envelope):
        self.events += [item.payload.json for item in envelope.items if item.type == "event"]


@pytest.fixture
def sentry_events():
    transport = MemoryTransport()
    settings = Settings.from_env({"SENTRY_DSN": "http://public@127.0.0.1:9/1", "SENTRY_ENVIRONMENT": "test"})
    assert init_error_tracking(settings, transport=transport) is True
    yield transport.events
    sentry_sdk.get_client().close()
    sentry_sdk.init()  # back to a disabled client


class Stage:
    @reports_unexpected_errors
    def validate(self, data: bytes, request_id: str):
        if data == b"crash":
            raise RuntimeError("injected fault")
        raise UnsupportedMediaType("not an image")

    @reports_unexpected_errors
    async def classify(self, data: bytes, top_k: int, request_id: str):
        raise ZeroDivisionError("injected async fault")


def test_server_fault_is_captured_with_request_id_tag(sentry_events):
    with pytest.raises(RuntimeError):
        Stage().validate(b"crash", request_id="req-123")
    sentry_sdk.flush()
    assert len(sentry_events) == 1
    event = sentry_events[0]
    assert event["tags"]["request_id"] == "req-123"
    assert event["environment"] == "test"
    assert event["exception"]["values"][-1]["type"] == "RuntimeError"


def test_async_fault_is_captured_too(sentry_events):
    with pytest.raises(ZeroDivisionError):
        asyncio.run(Stage().classify(b"x", 5, request_id="req-async"))
    sentry_sdk.flush()
    assert [e["tags"]["request_id"] for e in sentry_events] == ["req-async"]


def test_client_error_is_not_reported(sentry_events):
    with pytest.raises(UnsupportedMediaType):
        Stage().validate(b"avi", request_id="req-415")
    sentry_sdk.flush()
    assert sentry_events == []


def test_without_dsn_nothing_is_initialised_and_errors_still_raise():
    assert init_error_tracking(Settings.from_env({})) is False
    with pytest.raises(RuntimeError):
        Stage().validate(b"crash", request_id="req-none")
