"""Run the Locust load test headless and report P50/P95/P99 latency and throughput.

    python -m loadtests --host http://127.0.0.1:8000 --users 8 --spawn-rate 4 --run-time 60s --out DIR

Writes to DIR:
- summary.json: requests, failures, rps, p50_ms, p95_ms, p99_ms overall and per request type
  (valid, repeated, invalid), plus the run's parameters; the warm-up is excluded;
- latency.png: P50/P95/P99 and throughput over time;
- locust_stats.csv and friends, locust_report.html, locust.log: Locust's own reports;
- samples.jsonl: every request's timing.
Prints a short table, and exits 1 when the failure ratio is above --max-failure-ratio.
Only 127.0.0.1/localhost may be targeted; the run is bounded by --run-time.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

from loadtests.driver import percentile, require_loopback, summarise

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
REQUEST_TYPES = ("valid", "repeated", "invalid")


def seconds(text: str) -> float:
    """'90', '90s', '2m', '1h30m' -> seconds."""
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 60s, 2m)")
    return float(sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts))


def stats(samples: list[dict], duration_s: float) -> dict:
    return summarise([s["ms"] for s in samples], sum(not s["ok"] for s in samples), duration_s)


def summarise_after_warmup(samples: list[dict], warmup_s: float) -> tuple[dict, list[dict]]:
    """Overall and per-type stats for the samples after the warm-up."""
    if not samples:
        return {**stats([], 0.0), "by_type": {}}, []
    start = min(s["t"] for s in samples) + warmup_s
    kept = [s for s in samples if s["t"] >= start]
    duration = (max(s["t"] for s in kept) - start) if kept else 0.0
    summary = stats(kept, duration)
    summary["by_type"] = {
        name: stats([s for s in kept if s["name"] == name], duration) for name in REQUEST_TYPES
    }
    summary["measured_seconds"] = duration
    return summary, kept


def draw_chart(samples: list[dict], path: Path, bucket_s: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = min(s["t"] for s in samples)
    full_buckets = int((max(s["t"] for s in samples) - start) // bucket_s)  # drop the partial last one
    buckets: dict[int, list[float]] = {}
    for s in samples:
        bucket = int((s["t"] - start) // bucket_s)
        if bucket < full_buckets:
            buckets.setdefault(bucket, []).append(s["ms"])
    times = sorted(buckets)
    x = [(b + 0.5) * bucket_s for b in times]
    fig, (latency, throughput) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for q, style in ((50, "-"), (95, "--"), (99, ":")):
        latency.plot(x, [percentile(sorted(buckets[b]), q) for b in times], style, label=f"P{q}")
    latency.set_ylabel("latency (ms)")
    latency.legend()
    latency.grid(alpha=0.3)
    throughput.plot(x, [len(buckets[b]) / bucket_s for b in times], color="tab:green")
    throughput.set_ylabel("requests/s")
    throughput.set_xlabel("seconds since the measured window began")
    throughput.grid(alpha=0.3)
    fig.suptitle("Image classification load test (warm-up excluded)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def table(summary: dict) -> str:
    rows = [("all", summary)] + [(n, summary["by_type"][n]) for n in REQUEST_TYPES]
    lines = [f"{'type':<9}{'requests':>9}{'failures':>9}{'rps':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"]
    for name, s in rows:
        lines.append(
            f"{name:<9}{s['requests']:>9}{s['failures']:>9}{s['rps']:>8.1f}"
            f"{s['p50_ms']:>9.1f}{s['p95_ms']:>9.1f}{s['p99_ms']:>9.1f}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="http://127.0.0.1:8000")
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--spawn-rate", type=float, default=4)
    parser.add_argument("--run-time", default="60s", type=str)
    parser.add_argument("--warmup", default="10s", type=str, help="excluded from the percentiles")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--repeat-share", type=float, default=0.3)
    parser.add_argument("--invalid-share", type=float, default=0.05)
    parser.add_argument("--max-megapixels", type=float, default=12.0)
    parser.add_argument("--image-seed", type=int, default=0)
    parser.add_argument("--max-failure-ratio", type=float, default=0.01)
    args = parser.parse_args(argv)
    args.host = require_loopback(args.host)
    run_s, warmup_s = seconds(args.run_time), seconds(args.warmup)
    if not 0 < run_s <= 3600:
        parser.error("--run-time must be between 1s and 1h")
    if warmup_s >= run_s:
        parser.error("--warmup must be shorter than --run-time")
    args.run_s, args.warmup_s = run_s, warmup_s
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    samples_path = out / "samples.jsonl"
    command = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--host", args.host, "--users", str(args.users), "--spawn-rate", str(args.spawn_rate),
        "--run-time", f"{int(args.run_s)}s", "--stop-timeout", "10",
        "--csv", str(out / "locust"), "--html", str(out / "locust_report.html"),
        "--repeat-share", str(args.repeat_share), "--invalid-share", str(args.invalid_share),
        "--max-megapixels", str(args.max_megapixels), "--image-seed", str(args.image_seed),
        "--samples-file", str(samples_path),
    ]
    with (out / "locust.log").open("w") as log:
        # Locust exits 1 whenever any request failed; the threshold below decides instead.
        subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=args.run_s + 120)
    samples = [json.loads(line) for line in samples_path.read_text().splitlines()] if samples_path.exists() else []
    summary, kept = summarise_after_warmup(samples, args.warmup_s)
    summary["parameters"] = {
        k: getattr(args, k) for k in ("host", "users", "spawn_rate", "run_time", "warmup", "repeat_share",
                                      "invalid_share", "max_megapixels", "image_seed", "max_failure_ratio")
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if kept:
        draw_chart(kept, out / "latency.png", bucket_s=max(1.0, summary["measured_seconds"] / 30))
    print(table(summary))
    print(f"reports in {out}")
    if not kept:
        print("no requests were measured", file=sys.stderr)
        return 1
    if summary["failure_ratio"] > args.max_failure_ratio:
        print(f"failure ratio {summary['failure_ratio']:.3f} is above {args.max_failure_ratio}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
