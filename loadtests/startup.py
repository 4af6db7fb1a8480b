"""Time from `serve run serve_config.yaml` to GET /readyz answering 200.

    python -m loadtests.startup [--runs 3] [--config serve_config.yaml]

Starts the service as the README does, waits for readiness, stops it with Ctrl-C by process id,
and repeats. Needs the config's port free and no other Ray instance running.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from loadtests.service import running_service, serve_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=180)
    parser.add_argument("--config", type=Path, default=Path("serve_config.yaml"),
                        help="the Serve config, in the project folder (default: ./serve_config.yaml)")
    args = parser.parse_args()
    if not args.config.is_file():
        parser.error(f"no Serve config at {args.config}; run from the project folder or pass --config")
    times = []
    for run in range(args.runs):
        with running_service(serve_config(args.config), args.config.resolve().parent,
                             timeout_s=args.timeout) as service:
            times.append(service.ready_after_s)
        print(f"run {run + 1}: ready after {times[-1]:.1f} s", flush=True)
    print(f"median start-up to ready: {statistics.median(times):.1f} s over {len(times)} runs")


if __name__ == "__main__":
    main()
