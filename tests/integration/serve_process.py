"""`serve run` as a process of the tests: the shipped config to start it with, readiness, and a
clean stop by process id."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parents[2]


def serve_config() -> dict:
    """serve_config.yaml as shipped; the tests change their copy."""
    return yaml.safe_load((ROOT / "serve_config.yaml").read_text())


def deployment_config(config: dict, name: str) -> dict:
    (app,) = config["applications"]
    return next(d for d in app["deployments"] if d["name"] == name)


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


def interrupt_and_wait(process: subprocess.Popen, timeout_s: float = 60) -> None:
    """Ctrl-C a process the tests started (serve run shuts its applications down on it), then
    wait; kill it only if it does not exit in time."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
