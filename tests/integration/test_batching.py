"""Batching that pays: a burst of concurrent requests shares a few forward passes instead of
queueing for one pass each (how long they take is the batching benchmark's: docs/performance.md).

The /batched copy of the app runs the simulated model of the benchmarks at 300 ms per forward
pass, whatever its batch, with MODEL_MAX_BATCH_SIZE=16 and serve_config.yaml's Inference settings.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.images import unique_photo_bytes
from tests.integration.conftest import BATCHED_PREFIX
from tests.integration.metrics import scrape, total, wait_for

pytestmark = pytest.mark.integration
BURST = 32
EXPORT_EVERY_S = 10  # Ray's metrics report interval (RAY_metrics_report_interval_ms)


def post(service, data: bytes) -> int:
    return requests.post(service.url(BATCHED_PREFIX + "/v1/classify"), data=data, timeout=60).status_code


def passes(service) -> float:
    """The forward passes of the /batched copy so far, as Serve counts its batches."""
    return total([s for s in scrape(service) if s.labels.get("application") == "image-classifier-batched"
                  and s.labels.get("function_name") == "_classify_together"], "ray_serve_actual_batch_size_count")


def test_a_burst_shares_forward_passes(service):
    assert post(service, unique_photo_bytes()) == 200  # the copy is warm
    before = wait_for(lambda: passes(service))  # the warm-up's pass, once Ray has exported it
    photos = [unique_photo_bytes() for _ in range(BURST)]
    with ThreadPoolExecutor(BURST) as pool:
        assert list(pool.map(lambda data: post(service, data), photos)) == [200] * BURST
    time.sleep(EXPORT_EVERY_S + 1)  # an export after the burst's last pass, not one taken midway
    burst_passes = wait_for(lambda: passes(service) - before) or 0
    # Passes of up to 16 serve the burst in about 5. Without the two settings that keep batches
    # full (docs/performance.md, "Batching"), most passes ran a request or two: a batch closed every
    # 5 ms while the model ran, and requests past max_ongoing_requests waited in the ingress's
    # router, then came one by one.
    assert 0 < burst_passes <= BURST // 4


def test_the_model_endpoint_says_the_model_is_simulated(service):
    info = requests.get(service.url(BATCHED_PREFIX + "/v1/model"), timeout=30).json()
    assert info["runtime"] == "simulated (300 ms per batch + 0 ms per image)"
    assert info["batching"]["max_batch_size"] == 16
