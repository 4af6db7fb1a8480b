"""Does a model replica's memory settle? RSS over 5 000 distinct requests with a 512-entry cache.

    python -m loadtests.memory [--requests 5000] [--clients 4]

Starts `serve run serve_config.yaml` with MODEL_CACHE_SIZE=512 (needs port 8000 free and no
other Ray instance), sends distinct small JPEGs so the cache fills and then evicts, samples the
Inference replica's RSS from /proc every 500 requests, and stops the service.
"""

from __future__ import annotations

import argparse
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from loadtests.payloads import make_unique, photo_bytes
from loadtests.service import BASE_URL, running_service

REPLICA_TITLE = b"ServeReplica:image-classifier:Inference"


def inference_replica_rss_mib() -> dict[int, float]:
    """RSS of every local Inference replica process, by pid."""
    rss = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if REPLICA_TITLE not in (proc / "cmdline").read_bytes():
                continue
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss[int(proc.name)] = int(line.split()[1]) / 1024
        except OSError:
            continue
    return rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--sample-every", type=int, default=500)
    args = parser.parse_args()
    url = BASE_URL + "/v1/classify"
    small_jpeg = photo_bytes(size=(160, 120), quality=90)
    samples, lock, sent = [], threading.Lock(), [0]
    sessions = threading.local()

    def one(index: int) -> int:
        if not hasattr(sessions, "session"):
            sessions.session = requests.Session()
        data = make_unique("JPEG", small_jpeg, index.to_bytes(4, "big"))
        status = sessions.session.post(url, data=data, timeout=60).status_code
        with lock:
            sent[0] += 1
            if sent[0] % args.sample_every == 0:
                samples.append({"requests": sent[0], "rss_mib": inference_replica_rss_mib()})
                print(json.dumps(samples[-1]), flush=True)
        return status

    with running_service({"MODEL_CACHE_SIZE": "512"}):
        samples.append({"requests": 0, "rss_mib": inference_replica_rss_mib()})
        print(json.dumps(samples[-1]), flush=True)
        with ThreadPoolExecutor(args.clients) as pool:
            statuses = list(pool.map(one, range(args.requests)))
        cache = requests.get(BASE_URL + "/v1/model", timeout=10).json()["cache"]
    failures = sum(status != 200 for status in statuses)
    print(f"{args.requests} requests, {failures} failed; cache {cache}")
    series = [sum(s["rss_mib"].values()) for s in samples]
    print("total Inference RSS (MiB) by request count:",
          ", ".join(f"{s['requests']}: {r:.0f}" for s, r in zip(samples, series)))
    half = len(series) // 2
    print(f"growth over the second half: {series[-1] - series[half]:+.1f} MiB")


if __name__ == "__main__":
    main()
