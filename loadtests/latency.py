"""Single-connection latency: cache misses (distinct 640x480 JPEGs) versus cache hits (one repeated).

    python -m loadtests.latency --host http://127.0.0.1:8000 --requests 40

Requests are sequential, so this measures latency, not throughput. Bounded by --requests.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import requests

from loadtests.payloads import distinct_photos
from loadtests.stats import percentile
from loadtests.target import require_loopback


def timed_post(session: requests.Session, url: str, data: bytes) -> tuple[float, dict]:
    start = time.perf_counter()
    response = session.post(url, data=data, timeout=60)
    elapsed_ms = (time.perf_counter() - start) * 1000
    response.raise_for_status()
    return elapsed_ms, response.json()


def summarise(name: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    return (f"{name:<12} n={len(samples):<4} p50={percentile(ordered, 50):7.1f} ms  "
            f"p95={percentile(ordered, 95):7.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="http://127.0.0.1:8000")
    parser.add_argument("--requests", type=int, default=40, help="requests per kind (max 1000)")
    args = parser.parse_args()
    host = require_loopback(args.host)
    count = max(1, min(args.requests, 1000))
    url = f"{host}/v1/classify"
    # A fresh salt per run, so a second run against the same service still measures misses.
    images = distinct_photos(count, salt=os.urandom(3), quality=90)
    with requests.Session() as session:
        timed_post(session, url, distinct_photos(1, size=(64, 48))[0])  # warm the connection
        misses, hits = [], []
        for data in images:
            elapsed, body = timed_post(session, url, data)
            if not body["cached"]:
                misses.append(elapsed)
        for _ in range(count):
            elapsed, body = timed_post(session, url, images[0])
            if body["cached"]:
                hits.append(elapsed)
    print(f"640x480 JPEG, {len(images[0]) // 1024} KiB, one connection, sequential")
    print(summarise("cache miss", misses))
    if hits:
        print(summarise("cache hit", hits))
        print(f"hit/miss p50 ratio: {statistics.median(hits) / statistics.median(misses):.2f}")
    else:
        print("cache hit    none (is ENABLE_MODEL_CACHE off?)")


if __name__ == "__main__":
    main()
