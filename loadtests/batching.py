"""Does batching pay? The graph with Serve's batching off and on, in one run, on this machine.

    python -m loadtests.batching [--runs 3] [--duration 20] [--warmup 5] [--connections 32]
        [--max-batch-size 16] [--batch-ms 30] [--image-ms 0] [--real-model]
        [--config serve_config.yaml] [--out FILE.json]

The model is the simulated one (deployments/inference/simulated.py: --batch-ms per forward pass,
plus --image-ms per image, the GIL released), so the model's cost is a GPU's whatever this
machine is; --real-model serves the configured model instead. Each run measures the graph
unbatched (MODEL_MAX_BATCH_SIZE=1), batched (--max-batch-size), and unbatched again (A, B, A:
this machine's speed drifts), each a fresh `serve run` of --config, cache off. Each measurement
warms up for --warmup seconds, then drives --connections connections for --duration seconds: a
closed loop of distinct 640x480 JPEGs to 127.0.0.1 only. Around it, it reads Serve's batch-size
histogram (ray_serve_actual_batch_size) from Ray's Prometheus endpoint, for the mean batch.

Prints each measurement, then the medians over the runs: requests/s, P50, P99 and the slowest
request, the mean batch, and batched requests/s as a ratio to the mean of the two unbatched
measurements around it. --out writes the whole report as JSON. Needs port 8000 free and no
other Ray instance; a run takes about 4 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from loadtests.driver import drive
from loadtests.photos import DistinctJpegs
from loadtests.report import add_config_and_out, check_config, write_report
from loadtests.service import base_url, running_service, serve_config

SIMULATED = "deployments.inference.simulated:SimulatedRuntime"
BATCH_SIZE_METRIC = "ray_serve_actual_batch_size"
# Where `serve run` starts its local Ray instance; the file lists its Prometheus endpoints.
RAY_METRICS_TARGETS = Path("/tmp/ray/session_latest/prom_metrics_service_discovery.json")


class BatchingBench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.distinct_image = DistinctJpegs()
        self.started = time.monotonic()

    def env(self, max_batch_size: int) -> dict[str, str]:
        env = {"ENABLE_MODEL_CACHE": "false", "MODEL_MAX_BATCH_SIZE": str(max_batch_size)}
        if not self.args.real_model:
            env["MODEL_RUNTIME"] = f"{SIMULATED}?batch_ms={self.args.batch_ms:g}&image_ms={self.args.image_ms:g}"
        return env

    def measure(self, max_batch_size: int) -> dict:
        config = serve_config(self.args.config)
        project = self.args.config.resolve().parent
        with running_service(config, project, self.env(max_batch_size)):
            url, c = base_url(config) + "/v1/classify", self.args.connections
            drive(url, self.distinct_image, c, seconds=self.args.warmup)
            before = batch_sizes()
            load = drive(url, self.distinct_image, c, seconds=self.args.duration)
            after = _wait_for_export(before)
        summary = load.summary()
        result = {
            "max_batch_size": max_batch_size, "rps": summary["rps"], "p50_ms": summary["p50_ms"],
            "p99_ms": summary["p99_ms"], "max_ms": max(load.latencies_ms, default=float("nan")),
            "failures": summary["failures"],
            "mean_batch": mean_batch(before, after),
        }
        shown = "-" if result["mean_batch"] is None else f"{result['mean_batch']:.1f}"
        print(f"  [{(time.monotonic() - self.started) / 60:4.1f} min] batch up to {max_batch_size:>3}: "
              f"{result['rps']:6.1f} rps, P50 {result['p50_ms']:.0f} ms, P99 {result['p99_ms']:.0f} ms, "
              f"max {result['max_ms']:.0f} ms, mean batch {shown}, {result['failures']} failed", flush=True)
        return result

    def run(self, index: int) -> dict:
        print(f"run {index + 1} of {self.args.runs}", flush=True)
        first = self.measure(1)
        batched = self.measure(self.args.max_batch_size)
        again = self.measure(1)
        return {"unbatched": [first, again], "batched": batched,
                "rps_ratio": batched["rps"] / statistics.mean([first["rps"], again["rps"]])}


def batch_sizes() -> dict[tuple, tuple[float, float]]:
    """Sum and count of Serve's batch-size histogram, per series (one per replica)."""
    series: dict[tuple, list[float]] = {}
    for target in json.loads(RAY_METRICS_TARGETS.read_text())[0]["targets"]:
        try:
            text = requests.get(f"http://{target}/metrics", timeout=10).text
        except requests.RequestException:
            continue  # the file may still list an endpoint of an earlier Ray instance
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                for index, suffix in enumerate(("_sum", "_count")):
                    if sample.name == BATCH_SIZE_METRIC + suffix:
                        key = tuple(sorted(sample.labels.items()))
                        series.setdefault(key, [0.0, 0.0])[index] += sample.value
    return {key: (total, count) for key, (total, count) in series.items()}


def mean_batch(before: dict, after: dict) -> float | None:
    """The mean batch between two readings; a replica's series counts from zero if it is new."""
    total = sum(after[key][0] - before.get(key, (0.0, 0.0))[0] for key in after)
    count = sum(after[key][1] - before.get(key, (0.0, 0.0))[1] for key in after)
    return total / count if count else None


def _wait_for_export(before: dict, timeout_s: float = 30) -> dict:
    """Ray exports metrics every few seconds: the histogram after the load, once it has moved and
    then held still for one export period."""
    deadline = time.monotonic() + timeout_s
    last = batch_sizes()
    while time.monotonic() < deadline:
        time.sleep(6)
        now = batch_sizes()
        if now == last and now != before:
            return now
        last = now
    return last


def medians(runs: list[dict]) -> dict:
    unbatched = [m for run in runs for m in run["unbatched"]]
    batched = [run["batched"] for run in runs]
    keys = ("rps", "p50_ms", "p99_ms", "max_ms")
    result = {
        "unbatched": {key: statistics.median(m[key] for m in unbatched) for key in keys},
        "batched": {key: statistics.median(m[key] for m in batched) for key in keys},
        "rps_ratio": statistics.median(run["rps_ratio"] for run in runs),
        "failures": sum(m["failures"] for m in [*unbatched, *batched]),
    }
    sizes = [m["mean_batch"] for m in batched if m["mean_batch"] is not None]
    result["batched"]["mean_batch"] = statistics.median(sizes) if sizes else None
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--duration", type=float, default=20, help="seconds of each measured phase")
    parser.add_argument("--warmup", type=float, default=5, help="seconds of load before each measurement")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--batch-ms", type=float, default=30, help="the simulated model's time per forward pass")
    parser.add_argument("--image-ms", type=float, default=0, help="the simulated model's time per image")
    parser.add_argument("--real-model", action="store_true", help="serve the configured model, not the simulated one")
    add_config_and_out(parser)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.duration <= 0 or args.warmup < 0 or args.connections < 1 or args.max_batch_size < 2:
        parser.error("--runs and --connections must be at least 1, --max-batch-size at least 2, "
                     "--duration above 0, --warmup not below 0")
    check_config(parser, args)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    bench = BatchingBench(args)
    runs = [bench.run(index) for index in range(args.runs)]
    summary = medians(runs)
    print(f"\nmedians of {args.runs} run(s) at {args.connections} connections:")
    for name in ("unbatched", "batched"):
        m = summary[name]
        print(f"  {name:<10}{m['rps']:7.1f} rps, P50 {m['p50_ms']:.0f} ms, P99 {m['p99_ms']:.0f} ms, max {m['max_ms']:.0f} ms")
    mean_batch = summary["batched"]["mean_batch"]
    print(f"  batched/unbatched requests/s {summary['rps_ratio']:.2f}; mean batch "
          f"{'-' if mean_batch is None else f'{mean_batch:.1f}'}; {summary['failures']} failed")
    if args.out:
        write_report(args, median=summary, runs=runs)


if __name__ == "__main__":
    main()
