"""Side-by-side benchmark on this machine, one after the other in one run:

1. the raw model forward pass, batch 1 (the ceiling);
2. the one-process server (loadtests/one_process_server.py), what the graph replaces;
3. the Ray Serve graph, cache off, distinct images;
4. the one-process server again, to bracket the graph (this machine is noisy);
5. the Ray Serve graph with the cache on, at 50% and 90% repeated images, and single-connection
   latency of cache misses and hits.

    python -m loadtests.bench [--duration 20] [--connections 8] [--out docs/performance]

Each HTTP measurement is a closed loop of N connections posting distinct 640x480 JPEGs (about
100 KB) for --duration seconds after a warm-up, against 127.0.0.1 only. Needs ports 8000 and 8100
free and no other Ray instance. Writes OUT.json and OUT.png and prints the table and ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import requests
import torch

from loadtests.payloads import distinct_photos, make_unique
from loadtests.service import BASE_URL, ROOT, interrupt_and_wait, running_service
from loadtests.stats import percentile

ONE_PROCESS_URL = "http://127.0.0.1:8100"


@dataclass
class Measurement:
    label: str
    connections: int
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


async def closed_loop(url: str, connections: int, duration_s: float, warmup_s: float,
                      repeat_share: float, label: str) -> Measurement:
    """``connections`` clients post back to back; latencies after the warm-up are kept."""
    bases = distinct_photos(8, quality=92)
    hot = bases[:4]
    rng = random.Random(7)
    samples: list[tuple[float, float, bool]] = []
    start = time.monotonic()
    stop_at = start + warmup_s + duration_s

    async def client(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < stop_at:
            if rng.random() < repeat_share:
                payload = rng.choice(hot)
            else:
                payload = make_unique("JPEG", rng.choice(bases), os.urandom(16))
            t0 = time.monotonic()
            async with session.post(url + "/v1/classify", data=payload) as response:
                await response.read()
                ok = response.status == 200
            samples.append((t0, (time.monotonic() - t0) * 1000, ok))

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(client(session) for _ in range(connections)))
    kept = [(t, ms, ok) for t, ms, ok in samples if t >= start + warmup_s]
    latencies = sorted(ms for _, ms, _ in kept)
    return Measurement(
        label, connections, len(kept), sum(not ok for *_, ok in kept), len(kept) / duration_s,
        percentile(latencies, 50), percentile(latencies, 95), percentile(latencies, 99),
    )


def forward_ceiling(threads: int, seconds: float = 10) -> float:
    """Forward passes per second, batch 1, on the thread that loaded the model."""
    from common.settings import Settings
    from deployments.inference.spec import model_spec_from_settings

    torch.set_num_threads(threads)
    model = model_spec_from_settings(Settings.from_env({})).load()
    batch = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        for _ in range(5):
            model(batch)
        count, start = 0, time.monotonic()
        while time.monotonic() - start < seconds:
            model(batch)
            count += 1
    return count / (time.monotonic() - start)


def run_one_process(measure) -> list[Measurement]:
    process = subprocess.Popen(
        [sys.executable, "-m", "loadtests.one_process_server", "--port", "8100"], cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                requests.post(ONE_PROCESS_URL + "/v1/classify", data=distinct_photos(1)[0], timeout=5)
                break
            except requests.RequestException:
                time.sleep(0.5)
        return measure(ONE_PROCESS_URL)
    finally:
        interrupt_and_wait(process)


def draw(results: list[Measurement], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    saturated = [r for r in results if r.connections > 1]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    left.barh([r.label for r in saturated], [r.rps for r in saturated], color="tab:blue")
    left.set_xlabel("requests/s at saturation")
    left.invert_yaxis()
    for q, offset, colour in ((50, -0.25, "tab:green"), (95, 0, "tab:orange"), (99, 0.25, "tab:red")):
        right.barh([i + offset for i in range(len(saturated))],
                   [getattr(r, f"p{q}_ms") for r in saturated], height=0.25, label=f"P{q}", color=colour)
    right.set_yticks(range(len(saturated)), [r.label for r in saturated])
    right.invert_yaxis()
    right.set_xlabel("latency at saturation (ms)")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=4)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "performance")
    args = parser.parse_args()
    c = args.connections

    def measure(url: str, connections: int, label: str, repeat_share: float = 0.0) -> Measurement:
        result = asyncio.run(closed_loop(url, connections, args.duration, args.warmup, repeat_share, label))
        print(json.dumps(asdict(result)), flush=True)
        return result

    ceiling = {threads: forward_ceiling(threads) for threads in (1, 2)}
    print(f"forward passes/s, batch 1: {ceiling}", flush=True)
    results: list[Measurement] = []
    results += run_one_process(lambda url: [measure(url, 1, "one-process, 1 conn"),
                                            measure(url, c, f"one-process, {c} conn")])
    with running_service({"ENABLE_MODEL_CACHE": "false"}):
        results += [measure(BASE_URL, 1, "graph, cache off, 1 conn"),
                    measure(BASE_URL, c, f"graph, cache off, {c} conn")]
    results += run_one_process(lambda url: [measure(url, c, f"one-process again, {c} conn")])
    with running_service():
        results += [measure(BASE_URL, c, f"graph, 50% repeats, {c} conn", 0.5),
                    measure(BASE_URL, c, f"graph, 90% repeats, {c} conn", 0.9),
                    measure(BASE_URL, 1, "graph, cache miss, 1 conn", 0.0),
                    measure(BASE_URL, 1, "graph, cache hit, 1 conn", 1.0)]

    by_label = {r.label: r for r in results}
    one_process_rps = statistics.mean([by_label[f"one-process, {c} conn"].rps, by_label[f"one-process again, {c} conn"].rps])
    graph = by_label[f"graph, cache off, {c} conn"]
    ratios = {
        "graph_vs_one_process_throughput": graph.rps / one_process_rps,
        "graph_minus_one_process_p50_ms_1conn": by_label["graph, cache off, 1 conn"].p50_ms
        - by_label["one-process, 1 conn"].p50_ms,
        "cache_hit_p50_over_miss_p50": by_label["graph, cache hit, 1 conn"].p50_ms
        / by_label["graph, cache miss, 1 conn"].p50_ms,
        "graph_throughput_over_1_thread_ceiling": graph.rps / ceiling[1],
        "graph_50pct_repeats_vs_cache_off": by_label[f"graph, 50% repeats, {c} conn"].rps / graph.rps,
        "graph_90pct_repeats_vs_cache_off": by_label[f"graph, 90% repeats, {c} conn"].rps / graph.rps,
    }
    report = {
        "machine": {"cpus": os.cpu_count(), "torch": torch.__version__},
        "ceiling_forward_per_s": ceiling,
        "results": [asdict(r) for r in results],
        "ratios": ratios,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    draw(results, args.out.with_suffix(".png"))
    print(f"\n{'measurement':<34}{'rps':>7}{'p50':>8}{'p95':>8}{'p99':>8}{'errors':>8}")
    for r in results:
        print(f"{r.label:<34}{r.rps:>7.1f}{r.p50_ms:>8.1f}{r.p95_ms:>8.1f}{r.p99_ms:>8.1f}{r.errors:>8}")
    print(f"\nforward ceiling, batch 1: {ceiling[1]:.1f}/s on 1 thread, {ceiling[2]:.1f}/s on 2")
    for name, value in ratios.items():
        print(f"{name:<42}{value:8.2f}")


if __name__ == "__main__":
    main()
