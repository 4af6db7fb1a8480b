"""A real Prometheus server for the integration tests: Debian's ``prometheus``, on a private port
and a private data directory, loading the shipped deploy/prometheus/ config pointed at the test
cluster. The package's own systemd service is never used."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
INSTALL_HINT = "apt-get install prometheus (Debian's package; .ci/run installs it)"


def binary(name: str) -> str:
    """The path of ``prometheus`` or ``promtool``; fails the test, never skips it, when missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"`{name}` not found on PATH: {INSTALL_HINT}")
    return path


def config_for(targets: dict[str, str], interval: str) -> dict:
    """The shipped config with each job's target replaced (``targets``: job name -> host:port),
    scraping and evaluating every ``interval``, and its rule files as absolute paths (Prometheus
    reads relative ones from the rewritten config's folder)."""
    config = yaml.safe_load(SHIPPED_CONFIG.read_text())
    config["global"].update(scrape_interval=interval, evaluation_interval=interval)
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    config["rule_files"] = [str(SHIPPED_CONFIG.parent / path) for path in config["rule_files"]]
    return config


@dataclass(frozen=True)
class Prometheus:
    url: str

    def _get(self, path: str, **params) -> dict:
        response = requests.get(self.url + path, params=params, timeout=30)
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """The instant vector of ``expr`` now, or at Unix time ``at``."""
        params = {"query": expr} if at is None else {"query": expr, "time": at}
        data = self._get("/api/v1/query", **params)
        assert data["resultType"] == "vector", (expr, data["resultType"])
        return data["result"]

    def alerts(self) -> list[dict]:
        return self._get("/api/v1/alerts")["alerts"]

    def rules(self) -> list[dict]:
        return self._get("/api/v1/rules")["groups"]

    def targets(self) -> list[dict]:
        return self._get("/api/v1/targets")["activeTargets"]


@contextlib.contextmanager
def running(config: dict, workdir: Path, port: int, timeout_s: float = 60) -> Iterator[Prometheus]:
    """Prometheus with ``config`` on 127.0.0.1:``port``, its data under ``workdir``; stopped by
    its pid on exit."""
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = workdir / "prometheus.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [binary("prometheus"), f"--config.file={config_path}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while not _ready(url):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Prometheus did not start:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.25)
        yield Prometheus(url)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _ready(url: str) -> bool:
    try:
        return requests.get(url + "/-/ready", timeout=5).status_code == 200
    except requests.RequestException:
        return False
