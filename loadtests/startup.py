"""Time from `serve run serve_config.yaml` to GET /readyz answering 200.

    python -m loadtests.startup [--runs 3]

Starts the service as the README does (its own local Ray instance), waits for readiness, stops it
with Ctrl-C by process id, and repeats. Needs port 8000 free and no other Ray instance running,
since `serve run` would otherwise attach to it.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
READY_URL = "http://127.0.0.1:8000/readyz"


def one_start(timeout_s: float) -> float:
    serve_cli = Path(sys.executable).parent / "serve"
    start = time.monotonic()
    process = subprocess.Popen(
        [str(serve_cli), "run", "serve_config.yaml"], cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        while time.monotonic() - start < timeout_s:
            if process.poll() is not None:
                raise SystemExit(f"serve run exited with {process.returncode}")
            try:
                if requests.get(READY_URL, timeout=2).status_code == 200:
                    return time.monotonic() - start
            except requests.RequestException:
                pass
            time.sleep(0.25)
        raise SystemExit(f"not ready after {timeout_s}s")
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=180)
    args = parser.parse_args()
    times = []
    for run in range(args.runs):
        times.append(one_start(args.timeout))
        print(f"run {run + 1}: ready after {times[-1]:.1f} s", flush=True)
        time.sleep(3)  # let the previous instance's processes exit
    print(f"median start-up to ready: {statistics.median(times):.1f} s over {len(times)} runs")


if __name__ == "__main__":
    main()
