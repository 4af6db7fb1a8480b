"""The model-inference Ray Serve deployment: a thin wrapper around :class:`ImageClassifier`."""

from __future__ import annotations

import logging

from ray import serve

from common.console import CONSOLE, show_on_console
from common.contracts import DecodedImage, Prediction
from common.error_tracking import init_error_tracking, reports_unexpected_errors
from common.metrics import CacheMetrics, StageTimer
from common.settings import get_settings
from deployments.inference.cache import PredictionCache
from deployments.inference.classifier import ImageClassifier
from deployments.inference.runner import ModelRunner
from deployments.inference.runtimes import load_runtime
from deployments.inference.repository import ModelEntry, entry_from_settings
from deployments.inference.spec import model_spec, model_spec_from_settings

logger = logging.getLogger("ray.serve")
# A forward pass takes tens of milliseconds; the probe waits behind at most max_ongoing_requests of
# them. Each check waits HEALTH_PROBE_WAIT_S at most, well below serve_config.yaml's
# health_check_timeout_s, so that a wedged thread fails every check once the deadline has passed
# (Serve replaces the replica after three) and the failure names its cause.
HEALTH_PROBE_DEADLINE_S = 10
HEALTH_PROBE_WAIT_S = 1


@serve.deployment(name="Inference")
class Inference:
    def __init__(self, entry: ModelEntry | None = None) -> None:
        """``entry`` is the model's entry of the repository, bound when the graph is built
        (serve_app/app.py); without one, the model ``MODEL_NAME`` names."""
        show_on_console()
        settings = get_settings()
        init_error_tracking(settings)
        if entry is None:
            entry = entry_from_settings(settings)
            spec = model_spec_from_settings(settings)
        else:
            spec = model_spec(entry.source, entry.name)
        runtime_name = entry.runtime_on(settings.model_device)
        logger.info(
            "loading model %s: %s %s on %s, %d thread(s)", spec.identity, runtime_name,
            entry.precision, settings.model_device, settings.model_num_threads, extra=CONSOLE,
        )
        runner = ModelRunner(spec, lambda: load_runtime(
            spec, runtime_name, entry.precision, settings.model_device,
            settings.model_num_threads, settings.compiled_model_dir,
        ))
        cache = PredictionCache(entry.cache_size, enabled=settings.enable_model_cache)
        self._classifier = ImageClassifier(runner, cache)
        self._batching = {"max_batch_size": settings.model_max_batch_size, "wait_ms": settings.model_batch_wait_ms}
        self._classify_together.set_max_batch_size(settings.model_max_batch_size)
        self._batch_wait_s = settings.model_batch_wait_ms / 1000
        self._timer = StageTimer("inference", model=spec.name)
        self._cache_metrics = CacheMetrics(model=spec.name)
        self._cache_metrics.publish(cache.stats())
        runtime = runner.runtime
        logger.info("model %s loaded: %s %s on %s; %s", spec.identity, runtime.name, runtime.precision,
                    settings.model_device, describe_cache(cache), extra=CONSOLE)

    # Async, though nothing in it awaits: Serve runs a sync method on a worker thread, where this
    # lookup would race classify()'s writes to the cache, which is not thread-safe.
    @reports_unexpected_errors
    async def lookup(self, sha256: str, top_k: int, request_id: str) -> Prediction | None:
        """The cached answer for these bytes, or None: then the caller decodes and classifies."""
        prediction = self._classifier.cached(sha256, top_k)
        self._cache_metrics.publish(self._classifier.cache.stats())
        logger.info("request %s: model %s, cache %s", request_id, self._classifier.spec.name,
                    "miss" if prediction is None else "hit")
        return prediction

    @reports_unexpected_errors
    async def classify(self, decoded: DecodedImage, sha256: str, top_k: int, request_id: str) -> Prediction:
        """Run the model on a decoded image; with the cache on, the ingress asked :meth:`lookup` first."""
        # Checked here, so that a bad request fails alone instead of failing the batch it joins
        # (with the cache off, the ingress asks no lookup, which would have checked it).
        self._classifier.check_top_k(top_k)
        with self._timer.time():
            if self._batching["max_batch_size"] == 1:
                # Unbatched, skip Serve's batch queue: a task hop and its metrics per request.
                prediction = await self._classifier.classify(decoded, sha256, top_k)
            else:
                # Serve closes a batch when its wait ends, even while the model still runs the
                # last one; closed batches then queue for the model, each a pass of its own. So a
                # batch that starts while the model is busy waits until the model is free, and
                # takes every request that came meanwhile (docs/performance.md, "Batching").
                busy_for_s = self._classifier.runner.busy_for_s()
                self._classify_together.set_batch_wait_timeout_s(max(self._batch_wait_s, busy_for_s))
                prediction = await self._classify_together(decoded, sha256, top_k)
        self._cache_metrics.publish(self._classifier.cache.stats())
        logger.info("request %s: model %s, classified, top class %d", request_id, prediction.model_name,
                    prediction.classes[0].class_id)
        return prediction

    # With MODEL_MAX_BATCH_SIZE above 1, concurrent calls of classify() share one forward pass
    # (the size and wait are set in __init__). Serve exports the sizes as serve_actual_batch_size.
    # Batches do not overlap (max_concurrent_batches 1): the runner's one thread would only queue them.
    @serve.batch(max_batch_size=1, batch_wait_timeout_s=0)
    async def _classify_together(self, images: list[DecodedImage], sha256s: list[str],
                                 top_ks: list[int]) -> list[Prediction]:
        return await self._classifier.classify_batch(images, sha256s, top_ks)

    async def reconfigure(self, user_config: dict) -> None:
        """Serve's ``user_config`` for this deployment, applied in place: ``serve deploy`` with a
        new one reconfigures the running replicas instead of replacing them, so the model stays
        loaded and the cache keeps what still fits. One field, ``cache_size``: the predictions this
        replica's cache holds, in place of the model entry's ``cache_size`` (or MODEL_CACHE_SIZE)
        that it started with. A config without ``user_config`` keeps that size."""
        self._classifier.cache.resize(cache_size_from(user_config))
        self._cache_metrics.publish(self._classifier.cache.stats())
        logger.info("model %s reconfigured: %s", self._classifier.spec.identity,
                    describe_cache(self._classifier.cache), extra=CONSOLE)

    def describe(self) -> dict:
        spec = self._classifier.spec
        cache = self._classifier.cache
        return {
            "name": spec.name,
            "version": spec.version,
            "input_size": [spec.geometry.size, spec.geometry.size],
            "num_classes": spec.num_classes,
            "device": get_settings().model_device,
            "runtime": self._classifier.runner.runtime.name,
            "precision": self._classifier.runner.runtime.precision,
            "cache": {"enabled": cache.enabled, "size": cache.capacity},
            "batching": self._batching,
        }

    async def ready(self) -> bool:
        await self.check_health()
        return True

    async def check_health(self) -> None:
        """Serve replaces the replica if this raises: a forward pass must finish in time."""
        await self._classifier.runner.probe(HEALTH_PROBE_DEADLINE_S, HEALTH_PROBE_WAIT_S)
        # Ray's metrics agent drops a gauge that was not set within two export periods (20 s):
        # set again at every check, the cache's gauges stay on the dashboard while no request comes.
        self._cache_metrics.publish(self._classifier.cache.stats())


def cache_size_from(user_config: dict) -> int:
    """The cache size an Inference ``user_config`` sets; ValueError, naming the field, if it is
    not one. Serve then fails the deploy with that message and keeps the running replicas."""
    unknown = set(user_config) - {"cache_size"}
    if unknown:
        raise ValueError(f"Inference user_config: unknown field(s) {sorted(unknown)}; the one field is cache_size")
    size = user_config.get("cache_size")
    if type(size) is not int or size < 0:
        raise ValueError(f"Inference user_config: cache_size must be a whole number >= 0, got {size!r}")
    return size


def describe_cache(cache: PredictionCache) -> str:
    return f"model cache: enabled, size {cache.capacity}" if cache.enabled else "model cache: disabled"
