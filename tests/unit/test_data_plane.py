"""How the data plane calls the graph (serve_app/data_plane.py): one retry when a replica died or a
call went unanswered, every failure raised as the service's typed error, never as Ray's or Serve's,
and each answer's cache hit or miss counted where it is given."""

from __future__ import annotations

import asyncio
import functools
from types import SimpleNamespace

import pytest
from ray.exceptions import ActorUnavailableError, RayTaskError
from ray.serve.exceptions import BackPressureError

from common.contracts import DecodedImage, Prediction, ScoredClass, ValidatedImage
from common.errors import InternalError, Unavailable, UnsupportedMediaType
from serve_app.data_plane import DataPlane, call_graph

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


class Stage:
    """A deployment handle whose methods answer at once: ``answers`` by method name."""

    def __init__(self, **answers) -> None:
        self.calls: list[str] = []
        for method, answer in answers.items():
            setattr(self, method, SimpleNamespace(remote=functools.partial(self._answer, method, answer)))

    async def _answer(self, method: str, answer, *args):
        self.calls.append(method)
        return answer

    def options(self, **_):
        return self


class CacheAnswers:
    def __init__(self) -> None:
        self.counted: list[tuple[str, bool]] = []

    def count(self, model: str, cached: bool) -> None:
        self.counted.append((model, cached))


def prediction(cached: bool) -> Prediction:
    return Prediction("lite0", "1", (ScoredClass(1, "goldfish", 0.9),), cached, 4, 4, "png")


def graph(cache_enabled: bool, cached: Prediction | None) -> tuple[DataPlane, list[Stage], CacheAnswers]:
    validation = Stage(validate=ValidatedImage("png", 10, 4, 4))
    preprocessing = Stage(preprocess=DecodedImage(None, 4, 4, "png"))
    inference = Stage(lookup=cached, classify=prediction(cached=False))
    answers = CacheAnswers()
    plane = DataPlane(validation, preprocessing, inference, default_model="lite0", cache_enabled=cache_enabled,
                      cache_answers=answers, readiness_timeout_s=1, stalled_call_retry_s=STALL_S)
    return plane, [validation, preprocessing, inference], answers


@pytest.mark.parametrize(("cache_enabled", "cached", "calls", "counted"), [
    (True, prediction(cached=True), [[], [], ["lookup"]], [("lite0", True)]),
    (True, None, [["validate"], ["preprocess"], ["lookup", "classify"]], [("lite0", False)]),
    (False, None, [["validate"], ["preprocess"], ["classify"]], []),
], ids=["hit", "miss", "cache-off"])
def test_a_hit_skips_validation_and_decoding_and_each_answer_counts_its_hit_or_miss_once(cache_enabled, cached,
                                                                                         calls, counted):
    plane, stages, answers = graph(cache_enabled, cached)
    asyncio.run(plane.classify(b"\x89PNG", 1, "r-5"))
    assert [stage.calls for stage in stages] == calls  # validation's, preprocessing's, inference's, in order
    assert answers.counted == counted
