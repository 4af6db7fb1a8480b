"""Start the service the way the README does, for the benchmark scripts, and stop it by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
BASE_URL = "http://127.0.0.1:8000"


def interrupt_and_wait(process: subprocess.Popen, timeout_s: float = 60) -> None:
    """Ctrl-C a process we started (serve run shuts its applications down on it), then wait;
    kill it only if it does not exit in time."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until_ready(base_url: str, process: subprocess.Popen, timeout_s: float,
                     paths: tuple[str, ...] = ("/readyz",)) -> None:
    """Poll until every readiness path answers 200; raise if ``process`` exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"serve run exited with {process.returncode}")
        try:
            if all(requests.get(base_url + path, timeout=5).status_code == 200 for path in paths):
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"not ready after {timeout_s:g} s")
        time.sleep(0.25)


@contextlib.contextmanager
def running_service(env: dict[str, str] | None = None, timeout_s: float = 180) -> Iterator[float]:
    """Run `serve run serve_config.yaml` (its own local Ray instance); yield seconds to ready.

    Needs port 8000 free and no other Ray instance on this machine, which `serve run` would
    otherwise attach to.
    """
    serve_cli = Path(sys.executable).parent / "serve"
    start = time.monotonic()
    process = subprocess.Popen(
        [str(serve_cli), "run", "serve_config.yaml"], cwd=ROOT, env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        try:
            wait_until_ready(BASE_URL, process, timeout_s)
        except RuntimeError as exc:
            raise SystemExit(str(exc)) from None
        yield time.monotonic() - start
    finally:
        interrupt_and_wait(process)
