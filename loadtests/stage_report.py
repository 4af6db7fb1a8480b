"""Per-stage latency percentiles, cache hit rate and rejections, from the service's metrics.

    python -m loadtests.stage_report [--metrics-url http://127.0.0.1:8080/metrics]

Computes what the Grafana dashboard's queries show (histogram_quantile over the stage latency
buckets, hit/(hit+miss)), but over everything since the replicas started, from one scrape.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import requests
from prometheus_client.parser import text_string_to_metric_families

from loadtests.target import require_loopback

APP = "image-classifier"


def quantile(buckets: list[tuple[float, float]], q: float) -> float:
    """Prometheus' histogram_quantile: linear interpolation inside the bucket holding rank q."""
    buckets = sorted(buckets)
    total = buckets[-1][1]
    if total == 0:
        return float("nan")
    rank, lower_bound, lower_count = q * total, 0.0, 0.0
    for upper_bound, count in buckets:
        if count >= rank:
            if upper_bound == float("inf"):
                return lower_bound
            return lower_bound + (upper_bound - lower_bound) * (rank - lower_count) / max(count - lower_count, 1e-12)
        lower_bound, lower_count = upper_bound, count
    return lower_bound


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metrics-url", default="http://127.0.0.1:8080/metrics")
    args = parser.parse_args()
    text = requests.get(require_loopback(args.metrics_url), timeout=30).text
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples if s.labels.get("application") == APP]
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    totals: dict[str, float] = defaultdict(float)
    rejections: dict[tuple[str, str], float] = defaultdict(float)
    for s in samples:
        if s.name == "ray_image_stage_latency_ms_bucket":
            buckets[s.labels["stage"]][float(s.labels["le"])] += s.value
        elif s.name in ("ray_image_cache_hits_total", "ray_image_cache_misses_total"):
            totals[s.name] += s.value
        elif s.name == "ray_image_rejections_total":
            rejections[(s.labels["status"], s.labels["code"])] += s.value
    print(f"{'stage':<12}{'count':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for stage in ("validation", "preprocess", "inference", "end_to_end"):
        stage_buckets = list(buckets[stage].items())
        if stage_buckets:
            count = max(c for _, c in stage_buckets)
            print(f"{stage:<12}{count:>8.0f}" + "".join(f"{quantile(stage_buckets, q):>9.1f}" for q in (0.5, 0.95, 0.99)))
    hits, misses = totals["ray_image_cache_hits_total"], totals["ray_image_cache_misses_total"]
    if hits + misses:
        print(f"cache: {hits:.0f} hits, {misses:.0f} misses, hit rate {hits / (hits + misses):.1%}")
    for (status, code), count in sorted(rejections.items()):
        print(f"rejected {status} {code}: {count:.0f}")


if __name__ == "__main__":
    main()
