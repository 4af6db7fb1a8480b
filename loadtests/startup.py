"""Time from `serve run serve_config.yaml` to GET /readyz answering 200.

    python -m loadtests.startup [--runs 3]

Starts the service as the README does, waits for readiness, stops it with Ctrl-C by process id,
and repeats. Needs port 8000 free and no other Ray instance running.
"""

from __future__ import annotations

import argparse
import statistics
import time

from loadtests.service import running_service


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=180)
    args = parser.parse_args()
    times = []
    for run in range(args.runs):
        with running_service(timeout_s=args.timeout) as seconds:
            times.append(seconds)
        print(f"run {run + 1}: ready after {seconds:.1f} s", flush=True)
        time.sleep(3)  # let the previous instance's processes exit
    print(f"median start-up to ready: {statistics.median(times):.1f} s over {len(times)} runs")


if __name__ == "__main__":
    main()
