"""`serve run` on a Serve config, started the way the README does, for the tools that measure a
whole service (the bench, start-up), and stopped with Ctrl-C by its process id."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import requests
import yaml


def serve_config(path: Path, serve_env: dict[str, str] | None = None) -> dict:
    """The config at ``path`` with ``serve_env`` overriding its Serve environment
    (``controller_options``), e.g. ``{"RAY_SERVE_ENABLE_HA_PROXY": "0"}``."""
    config = yaml.safe_load(path.read_text())
    config["controller_options"]["runtime_env"]["env_vars"].update(serve_env or {})
    return config


def base_url(config: dict) -> str:
    return f"http://{config['http_options']['host']}:{config['http_options']['port']}"


@dataclass(frozen=True)
class RunningService:
    pid: int  # of `serve run`, which every process of the service descends from
    ready_after_s: float


@contextlib.contextmanager
def running_service(config: dict, project: Path, env: dict[str, str] | None = None,
                    timeout_s: float = 180, on_start: Callable[[int], None] | None = None,
                    address: str | None = None) -> Iterator[RunningService]:
    """Run `serve run` on ``config`` from the ``project`` folder (where its import path resolves),
    in a local Ray instance of its own (or the one at ``address``), until the block ends; it is
    ready when it enters. ``env`` reaches every process. Needs the config's port free and, without
    ``address``, no other Ray instance on this machine, which `serve run` would otherwise attach to.
    ``on_start`` gets `serve run`'s pid as it starts."""
    url = base_url(config)
    with tempfile.TemporaryDirectory(prefix="serve-run-") as folder:
        config_path, log_path = Path(folder) / "serve_config.yaml", Path(folder) / "serve_run.log"
        config_path.write_text(yaml.safe_dump(config))
        _wait_until_closed(url)
        started = time.monotonic()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [str(Path(sys.executable).parent / "serve"), "run", *(["--address", address] if address else []),
                 str(config_path)], cwd=project,
                env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
                # Run in the background (nohup, `&`), this tool ignores SIGINT, and so would serve
                # run: it would be killed instead of stopped, and leave HAProxy on port 8000.
                preexec_fn=_obey_sigint,
            )
        try:
            if on_start is not None:
                on_start(process.pid)
            _wait_until_ready(url, process, timeout_s, log_path)
            yield RunningService(process.pid, time.monotonic() - started)
        finally:
            stop(process)
            _wait_until_closed(url)


def _obey_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop(process: subprocess.Popen, timeout_s: float = 60) -> None:
    """Ctrl-C a process this tool started (serve run shuts its applications down on it), then
    wait; kill it only if it does not exit in time."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_until_ready(url: str, process: subprocess.Popen, timeout_s: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while not _ready(url):
        if process.poll() is not None or time.monotonic() > deadline:
            problem = (f"exited with {process.returncode}" if process.poll() is not None
                       else f"was not ready in {timeout_s:g} s")
            raise SystemExit(f"serve run {problem}; its log ends:\n{log_path.read_text(errors='replace')[-3000:]}")
        time.sleep(0.25)


def _ready(url: str) -> bool:
    try:
        return requests.get(url + "/readyz", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def _wait_until_closed(url: str, timeout_s: float = 30) -> None:
    """Wait until nothing listens on the URL's port: a service still stopping would otherwise be
    measured, or keep the next one from binding."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    deadline = time.monotonic() + timeout_s
    while _listening(host, int(port)):
        if time.monotonic() > deadline:
            raise SystemExit(f"something still listens on {url} after {timeout_s:g} s")
        time.sleep(0.5)


def _listening(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((host, port)) == 0
