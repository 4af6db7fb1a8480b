"""How the data plane calls the graph (serve_app/data_plane.py): one retry when a replica died or a
call went unanswered, and every failure raised as the service's typed error, never as Ray's or Serve's."""

from __future__ import annotations

import asyncio

import pytest
from ray.exceptions import ActorUnavailableError, RayTaskError
from ray.serve.exceptions import BackPressureError

from common.errors import InternalError, Unavailable, UnsupportedMediaType
from serve_app.data_plane import call_graph

STALL_S = 5


def calls_failing_with(*failures: Exception):
    """A graph call that raises each of ``failures`` in turn, then answers "ok"; and its call count."""
    calls = []

    async def call():
        calls.append(1)
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]
        return "ok"

    return call, calls


def test_a_call_whose_replica_died_is_retried_once():
    call, calls = calls_failing_with(ActorUnavailableError("restarting", actor_id=None))
    assert asyncio.run(call_graph(call, "r-1", STALL_S)) == "ok" and len(calls) == 2


class NeverAnswered:
    """A stage call that a dead replica never answers, cancellable like Serve's DeploymentResponse."""

    def __init__(self) -> None:
        self.cancelled = False

    def __await__(self):
        return asyncio.sleep(3600).__await__()

    def cancel(self) -> None:
        self.cancelled = True


def test_a_call_left_unanswered_is_cancelled_and_sent_again_after_the_stall_time():
    unanswered = NeverAnswered()

    async def answered():
        return "ok"

    calls = iter([unanswered, answered()])

    async def within_a_minute():  # failing, not hanging, if the stall bound were gone
        return await asyncio.wait_for(call_graph(lambda: next(calls), "r-4", stall_s=0.05), 60)

    assert asyncio.run(within_a_minute()) == "ok"
    assert unanswered.cancelled


def test_a_replica_dying_twice_is_unavailable():
    died = ActorUnavailableError("restarting", actor_id=None)
    call, calls = calls_failing_with(died, died)
    with pytest.raises(Unavailable):
        asyncio.run(call_graph(call, "r-2", STALL_S))
    assert len(calls) == 2


@pytest.mark.parametrize(("failure", "typed"), [
    (RayTaskError("validate", "traceback", UnsupportedMediaType("not an image")), UnsupportedMediaType),
    (RayTaskError("validate", "traceback", UnsupportedMediaType("not an image")).as_instanceof_cause(),
     UnsupportedMediaType),
    (BackPressureError(num_queued_requests=2, max_queued_requests=2), Unavailable),
    (RayTaskError("classify", "traceback", ZeroDivisionError("stage fault")), InternalError),
], ids=["stage-refusal", "stage-refusal-as-its-cause", "backpressure", "stage-fault"])
def test_a_failed_call_is_raised_as_its_typed_error_and_not_retried(failure, typed):
    call, calls = calls_failing_with(failure)
    with pytest.raises(typed) as raised:
        asyncio.run(call_graph(call, "r-3", STALL_S))
    assert type(raised.value) is typed and len(calls) == 1
