"""Reading the real Prometheus endpoint in the integration tests."""

from __future__ import annotations

import time

import requests
from prometheus_client.parser import text_string_to_metric_families


def scrape(service) -> list:
    text = requests.get(service.metrics_url, timeout=30).text
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def total(samples, name: str, **labels) -> float:
    return sum(
        s.value for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def wait_for(condition, timeout_s: float = 90):
    """Ray's metrics agent publishes every few seconds: poll until ``condition()`` is truthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(2)
