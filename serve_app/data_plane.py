"""The data plane: what the routes ask of the graph, and the only code that calls it.

As in KServe, route handlers stay thin and call this; this calls the Validation, Preprocessing and
Inference deployments through their DeploymentHandles. It never decodes an image: it hashes the
bytes, and the Inference replica that owns the hash answers from its cache or classifies them.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable

from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.handle import DeploymentHandle

from common.contracts import Prediction
from common.errors import Unavailable
from serve_app.http_errors import triage

logger = logging.getLogger("ray.serve")

READINESS_CACHE_S = 1.0


async def call_graph(call: Callable[[], Awaitable], request_id: str):
    """Await ``call()``; if its replica died under it, call once more. Classification is
    idempotent, so a retry cannot do harm, and Serve routes it to a live replica.

    A failure comes out as its typed error (:func:`~serve_app.http_errors.triage`), never as
    Ray's or Serve's: Serve installs its own plain-text handlers for some of those (backpressure)
    on the ingress's app, in place of the service's JSON error.
    """
    try:
        try:
            return await call()
        except (RayActorError, ActorUnavailableError) as exc:
            logger.warning("request %s: replica failed (%s); retrying once", request_id, type(exc).__name__)
            return await call()
    except Exception as exc:
        error = triage(exc, request_id)
        if error is exc:
            raise
        raise error from exc


class DataPlane:
    def __init__(self, validation: DeploymentHandle, preprocessing: DeploymentHandle,
                 inference: DeploymentHandle, *, cache_enabled: bool, readiness_timeout_s: float) -> None:
        self._validation = validation
        self._preprocessing = preprocessing
        self._inference = inference
        self._cache_enabled = cache_enabled
        self._readiness_timeout_s = readiness_timeout_s
        self._model_description: dict | None = None
        self._readiness: tuple[float, str | None] = (float("-inf"), None)

    async def classify(self, data: bytes, top_k: int, request_id: str, claimed_format: str | None = None) -> Prediction:
        """One image through the graph. Its SHA-256 picks the Inference replica that owns it, whose
        cache may answer at once; only on a miss are the bytes validated, decoded and classified."""
        sha256 = hashlib.sha256(data).hexdigest()
        # With serve_config.yaml's consistent-hash router, the lookup and the classify of one image
        # reach the replica whose cache owns it.
        model = self._inference.options(session_id=sha256)
        if self._cache_enabled:
            prediction = await call_graph(
                lambda: model.lookup.remote(sha256, top_k, request_id), request_id
            )
            if prediction is not None:
                return prediction
        validated = await call_graph(
            lambda: self._validation.validate.remote(data, request_id), request_id
        )
        if claimed_format and claimed_format != validated.format:
            logger.info(
                "request %s: Content-Type says %s but the bytes are %s; going by the bytes",
                request_id, claimed_format, validated.format,
            )
        # Chained, so that one retry covers both calls. With gRPC between deployments (the
        # throughput mode) Serve resolves the decoded array here and sends it on; with Ray actor
        # calls it would pass from replica to replica by reference.
        return await call_graph(
            lambda: model.classify.remote(
                self._preprocessing.preprocess.remote(data, validated.format, request_id), sha256, top_k, request_id
            ),
            request_id,
        )

    async def check_ready(self) -> None:
        """Raise :class:`Unavailable` naming the stages that do not pass their self-test in time.

        The answer is kept for READINESS_CACHE_S: the readiness routes need no API key, and each
        check runs a forward pass, so polling must not take the model's slots from real requests.
        """
        checked_at, failure = self._readiness
        if time.monotonic() - checked_at > READINESS_CACHE_S:
            failure = await self._stage_failures()
            self._readiness = (time.monotonic(), failure)
            if failure:
                logger.warning("readiness: %s", failure)
        if failure:
            raise Unavailable(failure)

    async def _stage_failures(self) -> str | None:
        stages = {"validation": self._validation, "preprocessing": self._preprocessing, "inference": self._inference}

        async def stage_ready(handle: DeploymentHandle) -> bool:
            try:
                return bool(await asyncio.wait_for(handle.ready.remote(), self._readiness_timeout_s))
            except Exception:
                return False

        results = await asyncio.gather(*(stage_ready(h) for h in stages.values()))
        not_ready = [name for name, ok in zip(stages, results) if not ok]
        return f"not ready: {', '.join(not_ready)}" if not_ready else None

    async def model(self, request_id: str) -> dict:
        """What the model replica reports about itself (``/v1/model``), asked once per ingress."""
        if self._model_description is None:
            try:
                self._model_description = await asyncio.wait_for(
                    call_graph(lambda: self._inference.describe.remote(), request_id), self._readiness_timeout_s
                )
            except asyncio.TimeoutError:
                raise Unavailable("the model is still loading; retry shortly") from None
        return self._model_description
