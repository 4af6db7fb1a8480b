"""Scale on paper: the requests/s to expect from N CPUs on K nodes (and G GPUs), and the replicas
each stage needs.

    python -m loadtests.capacity --cpus N [--nodes K] [--gpus G] [--door haproxy|proxy]
        [--profile BENCH.json] [--json]

The model: a request costs the CPU of every process it passes through, front door included, so N
CPUs serve at most N * 1000 / total_ms requests per second, less the headroom kept free. Each
replica is one Python process whose work is serialised (the event loop, or the model's one
thread), so it can use at most one core: a stage needs ceil(rps * stage_ms / 1000 / utilisation)
replicas. The front door has a limit of its own:

- HAProxy (``haproxy``, port 8000 as shipped): Serve runs one on every node, with
  RAY_SERVE_HAPROXY_NBTHREAD threads (1 in serve_config.yaml), so K nodes' doors pass
  K * min(threads, CPUs per node) * 1000 / haproxy_ms requests per second;
- Serve's Python proxy (``proxy``, RAY_SERVE_ENABLE_HA_PROXY=0): with direct ingress on, which the
  shipped throughput mode turns on, Ray 2.60 runs it on the head node only, so one single-threaded
  process passes at most 1000 / proxy_ms requests per second however many nodes there are.

With GPUs the forward pass leaves the Inference replica's CPU, and each GPU adds
1000 / gpu_forward_ms passes per second.

The CPU per request of each part of the service, through each door, is what
`python -m loadtests.bench` measures at 8 connections (cache off, distinct images): --profile
reads its --out report, by default docs/bench.json, the one docs/performance.md reports.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UTILISATION = 0.8  # of each CPU and each replica's core: headroom for bursts and noise
GPU_FORWARD_MS = 2.9  # one forward pass at batch 1 on an H100: 341 per second (docs/performance.md)
DEPLOYMENTS = ("Ingress", "Validation", "Preprocessing", "Inference")


@dataclass(frozen=True)
class FrontDoor:
    part: str  # its process, as the bench names it
    on_every_node: bool
    threads: int


FRONT_DOORS = {
    "haproxy": FrontDoor("HAProxy", on_every_node=True, threads=1),
    "proxy": FrontDoor("Serve's proxy", on_every_node=False, threads=1),
}

def plan(cpu_ms: dict[str, float], door: str, cpus: float, nodes: int = 1, gpus: int = 0,
         forward_ms: float = 0.0) -> dict:
    """The throughput the binding limit allows at UTILISATION, and the replicas it takes."""
    parts = dict(cpu_ms)
    if gpus:
        parts["Inference"] = max(parts["Inference"] - forward_ms, 0.5)
    front = FRONT_DOORS[door]
    doors = nodes if front.on_every_node else 1
    # Requests per second at full use of each limit.
    limits = {
        "CPUs": cpus * 1000 / sum(parts.values()),
        "front door": doors * min(front.threads, cpus / nodes) * 1000 / parts[front.part],
    }
    if gpus:
        limits["GPUs"] = gpus * 1000 / GPU_FORWARD_MS
    bound_by = min(limits, key=limits.get)
    rps = limits[bound_by] * UTILISATION
    replicas = {stage: max(1, math.ceil(rps * parts[stage] / 1000 / UTILISATION)) for stage in DEPLOYMENTS}
    return {"rps": rps, "saturation_rps": limits[bound_by], "bound_by": bound_by, "limits": limits,
            "replicas": replicas, "cpu_ms_per_request": parts}


def measured_cpu_ms(bench_report: Path, door: str) -> dict[str, float]:
    return json.loads(bench_report.read_text())["median"][door]["cpu_ms_per_request_by_part"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpus", type=float, required=True, help="CPUs in the cluster, all nodes together")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus", type=int, default=0)
    parser.add_argument("--door", choices=tuple(FRONT_DOORS), default="haproxy",
                        help="the front door: HAProxy (as shipped) or Serve's Python proxy")
    parser.add_argument("--forward-ms", type=float, default=5.2,
                        help="CPU ms of one forward pass inside the Inference figure (OpenVINO f32, 1 thread: "
                             "docs/performance.md)")
    parser.add_argument("--profile", type=Path, default=ROOT / "docs" / "bench.json",
                        help="a `python -m loadtests.bench --out` report to read (default: docs/bench.json)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    args = parser.parse_args()
    if args.cpus <= 0 or args.nodes < 1 or args.gpus < 0:
        parser.error("--cpus must be above 0, --nodes at least 1, --gpus not below 0")
    if not args.profile.is_file():
        parser.error(f"no bench report at {args.profile}: pass --profile with a `python -m loadtests.bench --out` report")
    cpu_ms = measured_cpu_ms(args.profile, args.door)
    result = plan(cpu_ms, args.door, args.cpus, args.nodes, args.gpus, args.forward_ms)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.cpus:g} CPUs{f', {args.gpus} GPU(s)' if args.gpus else ''} on {args.nodes} node(s), "
          f"through {FRONT_DOORS[args.door].part}: plan for {result['rps']:.0f} requests/s at "
          f"{UTILISATION:.0%} utilisation, {result['saturation_rps']:.0f} at saturation, bound by the "
          f"{result['bound_by']} (distinct images, no cache hits)")
    print("saturation by limit: " + ", ".join(f"{name} {rps:.0f}" for name, rps in result["limits"].items()))
    print(f"\n{'part of the service':<44}{'CPU ms/request':>15}{'replicas':>10}")
    for part, ms in result["cpu_ms_per_request"].items():
        print(f"{part:<44}{ms:>15.2f}{result['replicas'].get(part, '-'):>10}")
    print(f"\nCPU figures: {args.profile}")


if __name__ == "__main__":
    main()
