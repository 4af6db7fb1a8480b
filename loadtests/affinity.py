"""Cache hit rate and latency with several Inference replicas, with and without cache affinity.

    python -m loadtests.affinity [--replicas 1 2 3] [--hot 32] [--rounds 4] [--connections 12]

For each replica count it starts `serve run` on a copy of serve_config.yaml with that many
Inference replicas (half a CPU each, so three fit on two cores), once per routing mode:

- ``none``: Serve's default power-of-two-choices router, which ignores the image;
- ``strict``: the consistent-hash router, waiting for the owner replica when it is full;
- ``fallback``: the consistent-hash router, trying the next replica on the ring when it is full.

Each round sends every one of ``--hot`` images once, interleaved with as many never-seen images
(cache misses that keep the model replicas busy), from ``--connections`` clients at once. The first
round fills the caches; the hit rate counts the hot images of the later rounds. Latency is over
every request of the later rounds. Needs port 8000 free and no other Ray instance; 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import time

import aiohttp

from loadtests.payloads import distinct_photos, make_unique
from loadtests.service import BASE_URL, deployment_config, running_service, serve_config
from loadtests.stats import percentile

ROUTERS = ("none", "strict", "fallback")


def config_for(replicas: int, router: str) -> dict:
    config = serve_config()
    inference = deployment_config(config, "Inference")
    inference.pop("autoscaling_config")
    inference["num_replicas"] = replicas
    inference["ray_actor_options"]["num_cpus"] = 0.5
    if router == "none":
        inference.pop("request_router_config")
    else:
        inference["request_router_config"]["request_router_kwargs"]["num_fallback_replicas"] = int(router == "fallback")
    return config


async def rounds(hot: list[bytes], fresh_base: bytes, count: int, connections: int) -> dict:
    hot_hits = hot_sent = 0
    latencies: list[float] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        for round_index in range(count):
            payloads = [(True, data) for data in hot] + [
                (False, make_unique("JPEG", fresh_base, os.urandom(16))) for _ in hot
            ]
            random.Random(round_index).shuffle(payloads)
            queue = asyncio.Queue()
            for item in payloads:
                queue.put_nowait(item)

            async def client() -> None:
                nonlocal hot_hits, hot_sent
                while not queue.empty():
                    is_hot, data = queue.get_nowait()
                    start = time.monotonic()
                    async with session.post(BASE_URL + "/v1/classify", data=data) as response:
                        body = await response.json()
                    if round_index == 0:
                        continue
                    latencies.append((time.monotonic() - start) * 1000)
                    if is_hot:
                        hot_sent += 1
                        hot_hits += body.get("cached", False)

            await asyncio.gather(*(client() for _ in range(connections)))
    latencies.sort()
    return {"hit_rate": hot_hits / hot_sent, "repeats": hot_sent, "p50_ms": percentile(latencies, 50),
            "p99_ms": percentile(latencies, 99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--routers", nargs="+", choices=ROUTERS, default=list(ROUTERS))
    parser.add_argument("--hot", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=12)
    args = parser.parse_args()
    photos = distinct_photos(args.hot + 1, size=(320, 240), salt=os.urandom(8))
    hot, fresh_base = photos[:-1], photos[-1]
    results = []
    for replicas in args.replicas:
        for router in args.routers if replicas > 1 else ["none"]:
            with running_service({}, config=config_for(replicas, router)):
                result = asyncio.run(rounds(hot, fresh_base, args.rounds, args.connections))
            results.append({"replicas": replicas, "router": router, **result})
            print(json.dumps(results[-1]), flush=True)
    print(f"\n{'replicas':>8} {'router':<9}{'hit rate':>9}{'P50 ms':>8}{'P99 ms':>8}")
    for r in results:
        print(f"{r['replicas']:>8} {r['router']:<9}{r['hit_rate']:>9.0%}{r['p50_ms']:>8.0f}{r['p99_ms']:>8.0f}")


if __name__ == "__main__":
    main()
