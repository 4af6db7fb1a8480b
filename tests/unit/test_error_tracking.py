"""Sentry: an injected server fault is captured with its request ID tag; a client error is not.

Uses the real sentry-sdk with a local transport that keeps envelopes in memory instead of sending.
"""

import asyncio
import logging

import pytest
import sentry_sdk
from ray.exceptions import ActorUnavailableError
from ray.serve.exceptions import BackPressureError
from sentry_sdk.transport import Transport

from common.error_tracking import init_error_tracking, reports_unexpected_errors
from common.errors import (
    DecodeTimeout,
    InvalidParameter,
    Unavailable,
    UnsupportedMediaType,
)
from common.settings import Settings
from serve_app.http_errors import triage


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
    async def validate(self, data: bytes, request_id: str):
        if data == b"crash":
            raise RuntimeError("injected fault")
        raise UnsupportedMediaType("not an image")

    @reports_unexpected_errors
    async def classify(self, data: bytes, top_k: int, request_id: str):
        raise ZeroDivisionError("injected async fault")


def test_server_fault_is_captured_with_request_id_tag(sentry_events):
    with pytest.raises(RuntimeError):
        asyncio.run(Stage().validate(b"crash", request_id="req-123"))
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
        asyncio.run(Stage().validate(b"avi", request_id="req-415"))
    sentry_sdk.flush()
    assert sentry_events == []


def test_without_dsn_nothing_is_initialised_and_errors_still_raise():
    assert init_error_tracking(Settings.from_env({})) is False
    with pytest.raises(RuntimeError):
        asyncio.run(Stage().validate(b"crash", request_id="req-none"))


@pytest.mark.parametrize("exc", [
    BackPressureError(num_queued_requests=64, max_queued_requests=64),
    ActorUnavailableError("replica is restarting", actor_id=None),
    Unavailable("not ready: inference"),
    InvalidParameter("top_k=0 must be at least 1"),
    DecodeTimeout("decoding took longer than the 5 s budget"),
], ids=["backpressure", "replica-unavailable", "not-ready", "client-error", "decode-timeout"])
def test_overload_recovery_and_client_errors_stay_out_of_sentry_and_error_logs(sentry_events, caplog, exc):
    error = triage(exc, "req-quiet")
    sentry_sdk.flush()
    assert sentry_events == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert error.code in ("service_unavailable", "invalid_parameter", "decode_timeout")


def test_an_unexpected_failure_at_the_ingress_is_logged_and_reported(sentry_events, caplog):
    error = triage(KeyError("bug"), "req-bug")
    sentry_sdk.flush()
    assert error.code == "internal_error"
    assert [e["tags"]["request_id"] for e in sentry_events] == ["req-bug"]
    assert [r.levelname for r in caplog.records if "req-bug" in r.getMessage()] == ["ERROR"]


def test_a_stage_refusing_work_under_load_is_not_reported(sentry_events):
    class Busy:
        @reports_unexpected_errors
        async def preprocess(self, request_id: str):
            raise Unavailable("decoder pool is full")

    with pytest.raises(Unavailable):
        asyncio.run(Busy().preprocess(request_id="req-busy"))
    sentry_sdk.flush()
    assert sentry_events == []


def test_a_sync_method_is_refused_where_it_is_decorated():
    with pytest.raises(TypeError, match="decorates async methods"):
        @reports_unexpected_errors
        def validate(data: bytes, request_id: str):
            return data
