"""The service's own Prometheus metrics, recorded with ``ray.serve.metrics``.

Ray adds the ``deployment``, ``replica`` and ``application`` tags and exports everything through
its metrics agent, prefixed ``ray_`` (so ``image_cache_hits`` is scraped as
``ray_image_cache_hits_total``). Create these objects inside a replica, in its constructor.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

from ray.serve.metrics import Counter, Gauge, Histogram

from common.contracts import CacheStats

# 1 ms to 10 s, roughly logarithmic: enough resolution for P50/P95/P99 at every stage.
LATENCY_BUCKETS_MS = [1, 2, 5, 10, 20, 35, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 2000, 5000, 10000]
MEGAPIXEL_BUCKETS = [0.01, 0.05, 0.1, 0.3, 0.5, 1, 2, 5, 8, 12, 20, 40]
STAGES = ("validation", "preprocess", "inference", "end_to_end")


# The ``model`` tag of what serves every model alike (validation, preprocessing).
ANY_MODEL = "-"


class StageTimer:
    """Latency histogram for one stage of the graph, in milliseconds, by model."""

    def __init__(self, stage: str, model: str = ANY_MODEL) -> None:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}")
        self._histogram = Histogram(
            "image_stage_latency_ms",
            description="Time spent in each stage of an image classification, and end to end (ms), by model.",
            boundaries=LATENCY_BUCKETS_MS,
            tag_keys=("stage", "model"),
        )
        self._histogram.set_default_tags({"stage": stage, "model": model})

    @contextmanager
    def time(self):
        """Time the block; it may name the model it served in the yielded tags (``tags["model"]``)."""
        tags: dict[str, str] = {}
        start = time.perf_counter()
        try:
            yield tags
        finally:
            self._histogram.observe((time.perf_counter() - start) * 1000, tags=tags or None)


class RejectionCounter:
    def __init__(self) -> None:
        self._counter = Counter(
            "image_rejections",
            description="Requests answered with an error, by HTTP status and error code.",
            tag_keys=("status", "code"),
        )

    def count(self, status: int, code: str) -> None:
        self._counter.inc(tags={"status": str(status), "code": code})


class RequestCounter:
    """Requests by API key (its id, never the key), HTTP status and served model; ``-`` when keys
    are off, and for a request that reached no model."""

    def __init__(self) -> None:
        self._counter = Counter(
            "image_requests",
            description="Requests answered, by API key id, HTTP status and model.",
            tag_keys=("key_id", "status", "model"),
        )

    def count(self, key_id: str, status: int, model: str = ANY_MODEL) -> None:
        self._counter.inc(tags={"key_id": key_id, "status": str(status), "model": model})


_process_request_counter: RequestCounter | None = None


def request_counter() -> RequestCounter:
    """This process's one :class:`RequestCounter`: the ingress and the edge middleware in front of
    it count into the same metric object, never into two objects of one name."""
    global _process_request_counter
    if _process_request_counter is None:
        _process_request_counter = RequestCounter()
    return _process_request_counter


class DecodedSizeHistogram:
    def __init__(self) -> None:
        self._histogram = Histogram(
            "image_decoded_megapixels",
            description="Size of decoded images, in megapixels.",
            boundaries=MEGAPIXEL_BUCKETS,
        )

    def observe(self, width: int, height: int) -> None:
        self._histogram.observe(width * height / 1e6)


class CacheAnswerCounter:
    """The model caches' hits and misses as clients got them: counted by the ingress for each
    image it answered, by model. Counted where the answer is given, a model replica's death (a
    crash, a wedge, a kill) loses none of them, where the replica itself would lose what it
    counted since it last published (docs/observability.md)."""

    def __init__(self) -> None:
        self._hits = Counter("image_cache_hits", description="Images answered from a model's cache, by model.",
                             tag_keys=("model",))
        self._misses = Counter("image_cache_misses",
                               description="Images classified after a cache lookup found nothing, by model.",
                               tag_keys=("model",))

    def count(self, model: str, cached: bool) -> None:
        (self._hits if cached else self._misses).inc(tags={"model": model})


class CacheMetrics:
    """Publishes a model replica's cache gauges and evictions from its :class:`CacheStats`, tagged
    with the model's name: how each replica's cache does (its hits and misses are counted by the
    ingress, :class:`CacheAnswerCounter`)."""

    def __init__(self, model: str) -> None:
        def tagged(metric):
            metric.set_default_tags({"model": model})
            return metric

        self._evictions = tagged(Counter("image_cache_evictions", description="Model cache evictions, per replica.",
                                         tag_keys=("model",)))
        self._size = tagged(Gauge("image_cache_size", description="Entries in the model cache, per replica.",
                                  tag_keys=("model",)))
        self._capacity = tagged(Gauge("image_cache_capacity", description="Model cache capacity, per replica.",
                                      tag_keys=("model",)))
        self._hit_ratio = tagged(Gauge(
            "image_cache_hit_ratio", description="Model cache hits / lookups since the replica started, per replica.",
            tag_keys=("model",),
        ))
        self._evicted = 0

    def publish(self, stats: CacheStats) -> None:
        if stats.evictions > self._evicted:
            self._evictions.inc(stats.evictions - self._evicted)
        self._size.set(stats.size)
        self._capacity.set(stats.capacity if stats.enabled else 0)
        if stats.hits + stats.misses:
            self._hit_ratio.set(stats.hits / (stats.hits + stats.misses))
        self._evicted = stats.evictions
