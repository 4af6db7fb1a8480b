"""Start the service the way the README does, for the benchmark scripts, and stop it by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import requests
import yaml

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


def serve_config(serve_env: dict[str, str] | None = None) -> dict:
    """serve_config.yaml as shipped, with ``serve_env`` overriding its Serve environment
    (``controller_options``), e.g. ``{"RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"}`` to measure without."""
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    config["controller_options"]["runtime_env"]["env_vars"].update(serve_env or {})
    return config


def deployment_config(config: dict, name: str) -> dict:
    (app,) = config["applications"]
    return next(d for d in app["deployments"] if d["name"] == name)


@contextlib.contextmanager
def running_service(env: dict[str, str] | None = None, timeout_s: float = 180,
                    config: dict | None = None) -> Iterator[float]:
    """Run `serve run` on serve_config.yaml, or on ``config`` (its own local Ray instance); yield
    seconds to ready. ``env`` reaches every process.

    Needs port 8000 free and no other Ray instance on this machine, which `serve run` would
    otherwise attach to.
    """
    config_path = ROOT / "serve_config.yaml"
    if config is not None:
        config_path = Path(tempfile.mkdtemp(prefix="serve-config-")) / "serve_config.yaml"
        config_path.write_text(yaml.safe_dump(config))
    serve_cli = Path(sys.executable).parent / "serve"
    start = time.monotonic()
    process = subprocess.Popen(
        [str(serve_cli), "run", str(config_path)], cwd=ROOT, env={**os.environ, **(env or {})},
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
