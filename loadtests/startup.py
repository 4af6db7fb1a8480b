"""Time from `serve run serve_config.yaml` to GET /readyz answering 200, and the service's memory.

    python -m loadtests.startup [--runs 3] [--config serve_config.yaml] [--out FILE.json]

Starts the service as the README does, waits for readiness, stops it with Ctrl-C by process id,
and repeats. Memory is the sum of the resident sets of `serve run` and every process under it
(Ray's and Serve's, HAProxy's), sampled twice a second from start until --settle seconds after
ready; its peak is printed. Needs the config's port free and no other Ray instance running.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import psutil

from loadtests.report import add_config_and_out, check_config, write_report
from loadtests.service import running_service, serve_config


class PeakMemory:
    """Samples the summed RSS of the process tree under a pid, on a thread, keeping the peak."""

    def __init__(self) -> None:
        self.peak_bytes = 0
        self._root: psutil.Process | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def watch(self, pid: int) -> None:
        self._root = psutil.Process(pid)

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            if self._root is None:
                continue
            total = 0
            try:
                for process in (self._root, *self._root.children(recursive=True)):
                    try:
                        total += process.memory_info().rss
                    except psutil.Error:  # it ended between listing and reading
                        pass
            except psutil.Error:
                continue
            self.peak_bytes = max(self.peak_bytes, total)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak_bytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=180)
    parser.add_argument("--settle", type=float, default=10, help="seconds to keep sampling memory after ready")
    add_config_and_out(parser)
    args = parser.parse_args()
    check_config(parser, args)
    times, peaks = [], []
    for run in range(args.runs):
        memory = PeakMemory()
        with running_service(serve_config(args.config), args.config.resolve().parent,
                             timeout_s=args.timeout, on_start=memory.watch) as service:
            times.append(service.ready_after_s)
            time.sleep(args.settle)
        peaks.append(memory.stop() / 2**30)
        print(f"run {run + 1}: ready after {times[-1]:.1f} s; peak RSS {peaks[-1]:.2f} GiB", flush=True)
    print(f"median start-up to ready: {statistics.median(times):.1f} s over {len(times)} runs; "
          f"peak RSS of the whole service {max(peaks):.2f} GiB")
    if args.out:
        write_report(args, ready_after_s=times, peak_rss_gib=peaks)


if __name__ == "__main__":
    main()
