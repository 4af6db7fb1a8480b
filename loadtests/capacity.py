"""Scale on paper: replicas per stage and the throughput to expect from N CPUs (and G GPUs).

    python -m loadtests.capacity --cpus N [--gpus G] [--nodes K] [--profile docs/cpu_profile.json]

Reads the measured CPU milliseconds per request of each stage (`python -m loadtests.cpu_profile
--out docs/cpu_profile.json`). The model: a request costs the sum of its stages' CPU, so N CPUs
serve at most N * 1000 / total_ms requests per second, less the headroom kept free. Each replica
is one Python process whose work is serialised (the event loop, or the model's one thread), so it
can use at most one core: a stage needs ceil(rps * stage_ms / 1000 / utilisation) replicas. Serve
runs one HTTP proxy per node, not per replica, so K nodes serve at most K * 1000 / proxy_ms
requests per second however many CPUs they have. With GPUs, the forward pass leaves the Inference
replica's CPU and each GPU adds 1000 / gpu_forward_ms passes per second (4.0 ms at batch 1 on the
H100 measured in docs/performance.md).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from loadtests.service import ROOT

UTILISATION = 0.8  # of each CPU and each replica's core: headroom for bursts and noise
GPU_FORWARD_MS = 4.0


def plan(profile: dict, cpus: float, gpus: int = 0, forward_ms: float = 0.0, nodes: int = 1) -> dict:
    stages = dict(profile["cpu_ms_per_request"])
    if gpus:
        stages["Inference"] = max(stages["Inference"] - forward_ms, 0.5)
    # Requests per second at full use of each limit: the CPUs, the one proxy per node, the GPUs.
    limits = [cpus * 1000 / sum(stages.values()), nodes * 1000 / stages["Proxy"]]
    if gpus:
        limits.append(gpus * 1000 / GPU_FORWARD_MS)
    saturation = min(limits)
    rps = saturation * UTILISATION
    replicas = {
        stage: max(1, math.ceil(rps * ms / 1000 / UTILISATION))
        for stage, ms in stages.items() if stage not in ("Proxy", "Ray (controller, daemons)")
    }
    return {"rps": rps, "saturation_rps": saturation, "replicas": replicas, "cpu_ms_per_request": stages}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpus", type=float, required=True)
    parser.add_argument("--gpus", type=int, default=0)
    parser.add_argument("--nodes", type=int, default=1, help="Ray nodes, each with its own HTTP proxy")
    parser.add_argument("--forward-ms", type=float, default=5.4,
                        help="CPU ms of one forward pass inside the Inference stage's figure (OpenVINO, 1 thread)")
    parser.add_argument("--profile", type=Path, default=ROOT / "docs" / "cpu_profile.json")
    args = parser.parse_args()
    profile = json.loads(args.profile.read_text())
    result = plan(profile, args.cpus, args.gpus, args.forward_ms, args.nodes)
    print(f"{args.cpus:g} CPUs{f', {args.gpus} GPU(s)' if args.gpus else ''} on {args.nodes} node(s): "
          f"plan for {result['rps']:.0f} requests/s at {UTILISATION:.0%} utilisation, "
          f"{result['saturation_rps']:.0f} at saturation (distinct images, no cache hits)")
    print(f"\n{'stage':<28}{'CPU ms/request':>15}{'replicas':>10}")
    for stage, ms in result["cpu_ms_per_request"].items():
        print(f"{stage:<28}{ms:>15.1f}{result['replicas'].get(stage, '-'):>10}")
    print(f"\nprofile: {args.profile} (measured at {profile['rps']:.0f} rps on {profile['cpus']} CPUs)")


if __name__ == "__main__":
    main()
