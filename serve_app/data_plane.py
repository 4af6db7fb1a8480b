"""The data plane: what the routes ask of the graph, and the only code that calls it.

As in KServe, route handlers stay thin and call this; this calls the Validation, Preprocessing and
Inference deployments through their DeploymentHandles. It never decodes an image: it hashes the
bytes, and the Inference replica that owns the hash answers from its cache or classifies them.

Each served model is an Inference deployment of its own, with its own replicas and caches; a
request names its model, or gets the default one. Preprocessing is asked for each model's own
input geometry.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.handle import DeploymentHandle

from common.contracts import InputGeometry, Prediction
from common.errors import NotFound, Unavailable
from common.metrics import CacheAnswerCounter
from serve_app.http_errors import triage

logger = logging.getLogger("ray.serve")

READINESS_CACHE_S = 1.0


class StalledCall(Exception):
    """A stage call that went unanswered for the stall time; it was cancelled."""


async def answer_within(response: Awaitable, seconds: float):
    """``response``'s answer, or :class:`StalledCall` if none comes within ``seconds``; the call is
    then cancelled (a Serve response's ``cancel`` also stops the work if a replica still does it)."""
    try:
        return await asyncio.wait_for(response, seconds)
    except asyncio.TimeoutError:
        if callable(getattr(response, "cancel", None)):
            response.cancel()
        raise StalledCall(f"unanswered for {seconds:g} s") from None


async def call_graph(call: Callable[[], Awaitable], request_id: str, stall_s: float):
    """Await ``call()``; if its replica died under it, or it went unanswered for ``stall_s``
    seconds, call once more. Classification is idempotent, so a retry cannot do harm, and Serve
    routes it to a live replica. The stall bound is for a Ray Serve 2.60 defect: rarely, a call
    sent as a replica dies is never answered and raises nothing (docs/resilience.md).

    A failure comes out as its typed error (:func:`~serve_app.http_errors.triage`), never as
    Ray's or Serve's: Serve installs its own plain-text handlers for some of those (backpressure)
    on the ingress's app, in place of the service's JSON error.
    """
    try:
        try:
            return await answer_within(call(), stall_s)
        except (RayActorError, ActorUnavailableError, StalledCall) as exc:
            logger.warning("request %s: %s from a stage; calling once more", request_id, type(exc).__name__)
            return await call()
    except Exception as exc:
        error = triage(exc, request_id)
        if error is exc:
            raise
        raise error from exc


@dataclass(frozen=True)
class ServedModel:
    inference: DeploymentHandle
    geometry: InputGeometry | None  # None: the one Preprocessing was bound with (the default model's)


class DataPlane:
    def __init__(self, validation: DeploymentHandle, preprocessing: DeploymentHandle,
                 inference: DeploymentHandle, *, default_model: str, cache_enabled: bool,
                 cache_answers: CacheAnswerCounter, readiness_timeout_s: float, stalled_call_retry_s: float,
                 more_models: dict[str, ServedModel] | None = None) -> None:
        """``inference`` serves the default model, named ``default_model``; ``more_models`` the
        others, by name. With the cache on, ``cache_answers`` counts each answer's hit or miss."""
        self._validation = validation
        self._preprocessing = preprocessing
        self._default = ServedModel(inference, None)
        self._default_name = default_model
        self._more_models = dict(more_models or {})
        self._cache_enabled = cache_enabled
        self._cache_answers = cache_answers
        self._readiness_timeout_s = readiness_timeout_s
        self._stall_s = stalled_call_retry_s
        self._descriptions: dict[str | None, dict] = {}  # by name; None: the default model
        self._readiness: dict[str | None, tuple[float, str | None]] = {}  # by model; None: all

    async def model_named(self, name: str | None, request_id: str) -> dict:
        """The description of the served model called ``name`` (None: the default);
        :class:`NotFound` if none is, :class:`Unavailable` while it is still loading."""
        if name is None or name in self._more_models:
            return await self.model(request_id, name)
        default = await self.model(request_id)
        if name != default["name"]:
            served = ", ".join(repr(n) for n in (default["name"], *self._more_models))
            raise NotFound(f"unknown model {name!r}; this server serves {served}")
        return default

    async def classify(self, data: bytes, top_k: int, request_id: str, claimed_format: str | None = None,
                       model: str | None = None) -> Prediction:
        """One image through the graph, to the model named ``model`` (None: the default). Its
        SHA-256 picks the model's Inference replica that owns it, whose cache may answer at once;
        only on a miss are the bytes validated, decoded and classified."""
        if model is not None:
            await self.model_named(model, request_id)  # 404 if unknown; 503 while it loads, not a wait
        served = self._more_models.get(model, self._default)
        name = model if model in self._more_models else self._default_name
        sha256 = hashlib.sha256(data).hexdigest()
        # With serve_config.yaml's consistent-hash router, the lookup and the classify of one image
        # reach the replica whose cache owns it, among that model's replicas.
        inference = served.inference.options(session_id=sha256)
        if self._cache_enabled:
            prediction = await call_graph(
                lambda: inference.lookup.remote(sha256, top_k, request_id), request_id, self._stall_s
            )
            if prediction is not None:
                self._cache_answers.count(prediction.model_name, cached=True)
                return prediction
        validated = await call_graph(
            lambda: self._validation.validate.remote(data, request_id, name), request_id, self._stall_s
        )
        if claimed_format and claimed_format != validated.format:
            logger.info(
                "request %s: model %s, Content-Type says %s but the bytes are %s; going by the bytes",
                request_id, name, claimed_format, validated.format,
            )
        # Two calls, each with its own retry, so that a stalled decode is cancelled itself. With
        # gRPC between deployments (the throughput mode) a decode chained into the classify call
        # would come through here all the same: Serve resolves it in the caller.
        decoded = await call_graph(
            lambda: self._preprocessing.preprocess.remote(data, validated.format, request_id, name, served.geometry),
            request_id, self._stall_s,
        )
        prediction = await call_graph(
            lambda: inference.classify.remote(decoded, sha256, top_k, request_id), request_id, self._stall_s
        )
        if self._cache_enabled:
            self._cache_answers.count(prediction.model_name, cached=False)
        return prediction

    async def check_ready(self, model: str | None = None) -> None:
        """Raise :class:`Unavailable` naming the stages that do not pass their self-test in time:
        validation, preprocessing and every model, or only ``model`` of the models.

        The answer is kept for READINESS_CACHE_S: the readiness routes need no API key, and each
        check runs a forward pass, so polling must not take the model's slots from real requests.
        """
        checked_at, failure = self._readiness.get(model, (float("-inf"), None))
        if time.monotonic() - checked_at > READINESS_CACHE_S:
            failure = await self._stage_failures(model)
            self._readiness[model] = (time.monotonic(), failure)
            if failure:
                logger.warning("readiness: %s", failure)
        if failure:
            raise Unavailable(failure)

    async def _stage_failures(self, model: str | None) -> str | None:
        stages = {"validation": self._validation, "preprocessing": self._preprocessing}
        if model is None or model not in self._more_models:
            stages["inference"] = self._default.inference
        stages.update({f"model {name}": served.inference for name, served in self._more_models.items()
                       if model in (None, name)})

        async def stage_ready(handle: DeploymentHandle) -> bool:
            try:
                return bool(await asyncio.wait_for(handle.ready.remote(), self._readiness_timeout_s))
            except Exception:
                return False

        results = await asyncio.gather(*(stage_ready(h) for h in stages.values()))
        not_ready = [name for name, ok in zip(stages, results) if not ok]
        return f"not ready: {', '.join(not_ready)}" if not_ready else None

    async def model(self, request_id: str, name: str | None = None) -> dict:
        """What the replicas of model ``name`` (None: the default) report about it (``/v1/model``),
        asked once per ingress; :class:`Unavailable` while it is still loading."""
        description = self._descriptions.get(name)
        if description is None:
            served = self._default if name is None else self._more_models[name]
            try:
                description = await asyncio.wait_for(
                    call_graph(lambda: served.inference.describe.remote(), request_id, self._stall_s),
                    self._readiness_timeout_s,
                )
            except asyncio.TimeoutError:
                which = "the model" if name is None else f"model {name!r}"
                raise Unavailable(f"{which} is still loading; retry shortly") from None
            self._descriptions[name] = description
        return description

    async def models(self, request_id: str) -> list[dict]:
        """Every served model's description, the default first (``/v1/models``)."""
        names = [None, *self._more_models]
        descriptions = await asyncio.gather(*(self.model(request_id, name) for name in names))
        return [{**d, "default": name is None} for name, d in zip(names, descriptions)]
