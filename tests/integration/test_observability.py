"""Metrics scraped from the real Prometheus endpoint after real HTTP traffic, JSON logs tied
together by request ID, and the Grafana dashboard checked against what is actually exported."""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.images import riff, unique_photo_bytes
from tests.integration.conftest import ROOT, SERVICE_ENV
from tests.integration.metrics import scrape, total, wait_for

pytestmark = pytest.mark.integration
APP = "image-classifier"
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))


def classify(service, data: bytes, **headers) -> requests.Response:
    response = requests.post(service.url("/v1/classify"), data=data, headers=headers, timeout=60)
    return response


def settled_cache_counts(service, labels: dict) -> tuple[float, float]:
    """Hits and misses once earlier tests' traffic has been published: Ray's agent exports every
    few seconds, so wait until two scrapes 12 s apart agree."""
    def counts():
        samples = scrape(service)
        return (total(samples, "ray_image_cache_hits_total", **labels),
                total(samples, "ray_image_cache_misses_total", **labels))

    previous = counts()
    for _ in range(10):
        time.sleep(12)
        current = counts()
        if current == previous:
            return current
        previous = current
    pytest.fail("cache metrics never settled")


def test_cache_counts_are_exact_and_a_rejected_upload_counts_no_miss(service):
    # Counted by the ingress, for each image it answered; the cache's gauges are each replica's.
    answers, inference = {"application": APP}, {"application": APP, "deployment": "Inference"}
    hits0, misses0 = settled_cache_counts(service, answers)
    images = [unique_photo_bytes() for _ in range(3)]
    for data in images:
        assert classify(service, data).json()["cached"] is False
    for data in images * 2:
        assert classify(service, data).json()["cached"] is True
    # Looked up in the cache like any upload, then refused by validation: not a miss.
    assert classify(service, riff(b"AVI ", b"\x00" * 32)).status_code == 415

    def counted():
        samples = scrape(service)
        deltas = (total(samples, "ray_image_cache_hits_total", **answers) - hits0,
                  total(samples, "ray_image_cache_misses_total", **answers) - misses0)
        return samples if deltas == (6, 3) else None

    samples = wait_for(counted)
    assert samples, "expected exactly 6 hits and 3 misses"
    time.sleep(6)  # and they stay exact: nothing is double counted later
    later = scrape(service)
    assert total(later, "ray_image_cache_hits_total", **answers) - hits0 == 6
    assert total(later, "ray_image_cache_misses_total", **answers) - misses0 == 3
    capacities = {s.value for s in later if s.name == "ray_image_cache_capacity"
                  and all(s.labels.get(k) == v for k, v in inference.items())}
    assert capacities == {int(SERVICE_ENV["MODEL_CACHE_SIZE"])}, "each replica's capacity"
    assert total(later, "ray_image_cache_size", **inference) >= 3


def test_rejections_are_counted_by_status_and_code(service):
    labels = {"application": APP, "status": "415", "code": "unsupported_media_type"}
    before = total(scrape(service), "ray_image_rejections_total", **labels)
    for _ in range(2):
        assert classify(service, riff(b"AVI ", b"\x00" * 32)).status_code == 415
    assert wait_for(lambda: total(scrape(service), "ray_image_rejections_total", **labels) - before == 2)


def test_stage_latency_and_image_size_histograms_are_exported(service):
    assert classify(service, unique_photo_bytes()).status_code == 200

    def exported():
        samples = scrape(service)
        stages = {s.labels.get("stage") for s in samples
                  if s.name == "ray_image_stage_latency_ms_count" and s.value > 0}
        megapixels = total(samples, "ray_image_decoded_megapixels_count", application=APP)
        return stages >= {"validation", "preprocess", "inference", "end_to_end"} and megapixels > 0

    assert wait_for(exported)
    buckets = {s.labels["le"] for s in scrape(service) if s.name == "ray_image_stage_latency_ms_bucket"}
    assert {"1.0", "10000.0"} <= buckets


def test_one_grep_of_a_request_id_follows_it_through_every_stage(service):
    request_id = f"trace-{uuid.uuid4().hex}"
    assert classify(service, unique_photo_bytes(), **{"X-Request-ID": request_id}).status_code == 200

    def lines_by_deployment():
        found: dict[str, list[dict]] = {}
        for path in (service.ray_logs / "serve").glob("replica_*.log"):
            for line in path.read_text(errors="replace").splitlines():
                if request_id in line:
                    record = json.loads(line)
                    deployment = record["deployment"].removeprefix(f"{APP}_")
                    found.setdefault(deployment, []).append(record)
        return found if len(found) == 4 else None

    found = wait_for(lines_by_deployment, timeout_s=30)
    assert found and set(found) == {"Ingress", "Validation", "Preprocessing", "Inference"}, found
    assert all(record["request_id"] == request_id for records in found.values() for record in records)


def test_dashboard_queries_name_only_exported_metrics(service):
    assert DASHBOARDS, "no dashboard JSON under deploy/grafana/dashboards"
    repeated = unique_photo_bytes()
    for data in (repeated, repeated, b"not an image"):
        classify(service, data)
    used = {
        name for dashboard in DASHBOARDS for panel in json.loads(dashboard.read_text())["panels"]
        for target in panel.get("targets", []) for name in metric_names(target["expr"])
    }
    assert all(len(json.loads(dashboard.read_text())["panels"]) >= 5 for dashboard in DASHBOARDS)
    wait_for(lambda: _exported_names(service) >= used)
    assert sorted(used - _exported_names(service)) == [], "dashboard metrics that are never exported"


_PROMQL_WORDS = {"sum", "rate", "irate", "increase", "by", "without", "histogram_quantile", "le",
                 "clamp_min", "max", "min", "avg", "count", "on", "ignoring", "or", "and", "unless",
                 "vector", "label_replace", "sort_desc", "topk"}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (identifiers that are not functions, keywords or labels)."""
    without_labels = re.sub(r"\{[^}]*\}", "", expr)
    without_grouping = re.sub(r"\b(by|without)\s*\([^)]*\)", "", without_labels)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_grouping)
    names = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_ranges))
    return {n for n in names if n not in _PROMQL_WORDS and not re.fullmatch(r"\d+", n)}


def _exported_names(service) -> set[str]:
    """Metric names from both of deploy/prometheus/prometheus.yml's jobs: Ray's metrics agent and
    the front door's HAProxy."""
    haproxy = requests.get(f"http://127.0.0.1:{service.ports.haproxy_metrics}/metrics", timeout=30).text
    haproxy_names = {s.name for family in text_string_to_metric_families(haproxy) for s in family.samples}
    return {s.name for s in scrape(service)} | haproxy_names
