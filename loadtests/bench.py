"""Is the graph worth its hops? The service through each front door against the one-process torch
server, on this machine, in one run.

    python -m loadtests.bench [--runs 3] [--duration 20] [--warmup 4] [--connections 8]
        [--serve-env KEY=VALUE ...] [--config serve_config.yaml] [--out FILE.json]

Each run measures, one after the other (this machine's speed drifts, so the one-process server
brackets the graph: A, B, A):
1. the one-process server (loadtests/one_process_server.py: the graph's validator, decoder and
   model on torch in one request handler), on port 8100;
2. the graph through port 8000 as shipped, Serve's HAProxy mode (RAY_SERVE_ENABLE_HA_PROXY=1);
3. the graph through Serve's Python proxy instead (the same config with RAY_SERVE_ENABLE_HA_PROXY=0);
4. the one-process server again.
The two doors swap places every other run. --serve-env changes both doors' Serve environment.

Each measurement warms up for --warmup seconds at --connections, then drives one connection and
then --connections, --duration seconds each: a closed loop of distinct 640x480 JPEGs (about
100 KB), cache off, to 127.0.0.1 only. Over the --connections part it reads, from /proc, the CPU
time of every process of the service measured (`serve run` or the one-process server, and all
they started), per request and by part of the service, which
`python -m loadtests.capacity --profile FILE.json` reads; the CPU of the machine's other processes
(the load generator excluded) is reported apart, as a measure of the noise.

Prints progress, then the medians over the runs: requests/s at --connections and single-connection
P50, each also as a ratio to the one-process server's mean in the same run, and CPU per request.
--out writes the whole report as JSON; nothing else is written. Needs ports 8000 and 8100 free
and no other Ray instance; a run takes about 5 minutes with the defaults on 2 cores.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import subprocess
import sys
import time

from loadtests.cpu import cpu_used, family, part_of, processes
from loadtests.driver import drive
from loadtests.photos import DistinctJpegs
from loadtests.report import add_config_and_out, check_config, write_report
from loadtests.service import base_url, running_service, serve_config, stop

ONE_PROCESS_PORT = 8100
ONE_PROCESS = "one_process"
# The graph's doors: RAY_SERVE_ENABLE_HA_PROXY for each.
DOORS = {"haproxy": "1", "proxy": "0"}
LABELS = {ONE_PROCESS: "one-process server", "haproxy": "HAProxy (as shipped)", "proxy": "Serve's proxy"}


class Bench:
    """Measures one service at a time with the same images and the same phases."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.distinct_image = DistinctJpegs()
        self.started = time.monotonic()

    def measure(self, base: str, root_pid: int) -> dict:
        """Warm-up, one connection, then --connections with the CPU of every process read around
        it: the service's (``root_pid`` and its descendants) by part, and the rest of this
        machine's apart, the load generator excluded, as a measure of the noise."""
        url, c, seconds = base + "/v1/classify", self.args.connections, self.args.duration
        drive(url, self.distinct_image, c, seconds=self.args.warmup)
        single = drive(url, self.distinct_image, 1, seconds=seconds).summary()
        before = processes()
        loaded = drive(url, self.distinct_image, c, seconds=seconds).summary()
        after = processes()
        service = family(after, root_pid)
        by_part: collections.Counter = collections.Counter()
        elsewhere = 0.0
        for pid, cpu_s in cpu_used(before, after).items():
            if pid in service:
                by_part[part_of(after[pid].command)] += cpu_s * 1000 / loaded["requests"]
            elif pid != str(os.getpid()):
                elsewhere += cpu_s * 1000 / loaded["requests"]
        return {
            "rps": loaded["rps"], "p50_ms": loaded["p50_ms"], "p99_ms": loaded["p99_ms"],
            "p50_1conn_ms": single["p50_ms"],
            "failures": single["failures"] + loaded["failures"],
            "cpu_ms_per_request": sum(by_part.values()),
            "cpu_ms_per_request_by_part": {part: ms for part, ms in by_part.most_common() if ms >= 0.01},
            "other_processes_cpu_ms_per_request": elsewhere,
        }

    def one_process_server(self) -> dict:
        process = subprocess.Popen(
            [sys.executable, "-m", "loadtests.one_process_server", "--port", str(ONE_PROCESS_PORT)],
            cwd=self.args.config.resolve().parent, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{ONE_PROCESS_PORT}"
        try:
            deadline = time.monotonic() + 120
            while drive(base + "/v1/classify", self.distinct_image, 1, requests=1).statuses[200] == 0:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the one-process server did not answer")
                time.sleep(0.5)
            return self.report(ONE_PROCESS, self.measure(base, process.pid))
        finally:
            stop(process)

    def graph(self, door: str) -> dict:
        env = {**dict(item.split("=", 1) for item in self.args.serve_env), "RAY_SERVE_ENABLE_HA_PROXY": DOORS[door]}
        config = serve_config(self.args.config, env)
        with running_service(config, self.args.config.resolve().parent, {"ENABLE_MODEL_CACHE": "false"}) as service:
            return self.report(door, self.measure(base_url(config), service.pid))

    def report(self, name: str, result: dict) -> dict:
        failed = f", {result['failures']} FAILED" if result["failures"] else ""
        print(f"  [{(time.monotonic() - self.started) / 60:4.1f} min] {LABELS[name]:<22}"
              f"{result['rps']:6.1f} rps at {self.args.connections} connections, P50 {result['p50_1conn_ms']:.1f} ms"
              f" at 1, {result['cpu_ms_per_request']:.1f} ms CPU/request (other processes"
              f" {result['other_processes_cpu_ms_per_request']:.1f}){failed}", flush=True)
        return result

    def run(self, index: int) -> dict:
        doors = list(DOORS) if index % 2 == 0 else list(reversed(DOORS))
        print(f"run {index + 1} of {self.args.runs}", flush=True)
        first = self.one_process_server()
        graph = {door: self.graph(door) for door in doors}
        again = self.one_process_server()
        return {ONE_PROCESS: [first, again], **graph, "ratios": ratios([first, again], graph)}


def ratios(one_process: list[dict], graph: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Each door against the mean of the one-process server's two measurements around it."""
    rps = statistics.mean(m["rps"] for m in one_process)
    p50 = statistics.mean(m["p50_1conn_ms"] for m in one_process)
    return {door: {"rps": m["rps"] / rps, "p50_1conn": m["p50_1conn_ms"] / p50} for door, m in graph.items()}


def medians(runs: list[dict]) -> dict[str, dict]:
    """Per service, the median over the runs of each figure (the one-process server's two
    measurements in a run both count), and the failures of all runs."""
    result = {}
    for name in (ONE_PROCESS, *DOORS):
        measured = [m for run in runs for m in (run[name] if name == ONE_PROCESS else [run[name]])]
        parts = {part for m in measured for part in m["cpu_ms_per_request_by_part"]}
        result[name] = {
            key: statistics.median(m[key] for m in measured)
            for key in ("rps", "p50_1conn_ms", "cpu_ms_per_request", "other_processes_cpu_ms_per_request")
        } | {
            "failures": sum(m["failures"] for m in measured),
            "cpu_ms_per_request_by_part": {
                part: statistics.median(m["cpu_ms_per_request_by_part"].get(part, 0.0) for m in measured)
                for part in sorted(parts)
            },
        }
        if name in DOORS:
            result[name] |= {f"{key}_vs_one_process": statistics.median(run["ratios"][name][key] for run in runs)
                             for key in ("rps", "p50_1conn")}
    return result


def table(summary: dict[str, dict], args: argparse.Namespace) -> str:
    c = args.connections
    lines = [
        f"medians of {args.runs} run(s); cache off, distinct 640x480 JPEGs; ratios against the one-process server",
        f"{'':<24}{f'rps at {c}':>10}{'ratio':>8}{'P50 at 1, ms':>14}{'ratio':>8}{'CPU ms/request':>16}"
        f"{'other processes':>17}{'failed':>8}",
    ]
    for name, m in summary.items():
        rps_ratio = f"{m['rps_vs_one_process']:.2f}" if name in DOORS else "1"
        p50_ratio = f"{m['p50_1conn_vs_one_process']:.2f}" if name in DOORS else "1"
        lines.append(f"{LABELS[name]:<24}{m['rps']:>10.1f}{rps_ratio:>8}{m['p50_1conn_ms']:>14.1f}{p50_ratio:>8}"
                     f"{m['cpu_ms_per_request']:>16.1f}{m['other_processes_cpu_ms_per_request']:>17.1f}"
                     f"{m['failures']:>8}")
    lines += ["", f"CPU ms per request at {c} connections, by part of the service"]
    parts = sorted({part for m in summary.values() for part in m["cpu_ms_per_request_by_part"]})
    lines.append(f"{'':<44}" + "".join(f"{LABELS[name]:>24}" for name in summary))
    for part in parts:
        cells = (m["cpu_ms_per_request_by_part"].get(part) for m in summary.values())
        lines.append(f"{part:<44}" + "".join(f"{'-' if ms is None else f'{ms:.2f}':>24}" for ms in cells))
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--duration", type=float, default=20, help="seconds of each measured phase")
    parser.add_argument("--warmup", type=float, default=4, help="seconds of load before each measurement")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--serve-env", action="append", default=[], metavar="KEY=VALUE",
                        help="a variable of the config's Serve environment, for both doors")
    add_config_and_out(parser)
    args = parser.parse_args(argv)
    if args.runs < 1 or args.duration <= 0 or args.warmup < 0 or args.connections < 1:
        parser.error("--runs and --connections must be at least 1, --duration above 0, --warmup not below 0")
    check_config(parser, args)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    bench = Bench(args)
    runs = [bench.run(index) for index in range(args.runs)]
    summary = medians(runs)
    print("\n" + table(summary, args))
    if args.out:
        write_report(args, labels=LABELS, median=summary, runs=runs)


if __name__ == "__main__":
    main()
