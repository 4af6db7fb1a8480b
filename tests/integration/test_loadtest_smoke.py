"""A short headless Locust run against the test service, so the load-test scripts cannot rot."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.integration.conftest import ROOT

pytestmark = pytest.mark.integration


def test_headless_load_test_writes_its_reports(service, tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "loadtests", "--host", service.base_url, "--users", "2", "--spawn-rate", "2",
         "--run-time", "12s", "--warmup", "3s", "--max-megapixels", "0.5", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=90,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((out / "summary.json").read_text())
    for key in ("requests", "failures", "rps", "p50_ms", "p95_ms", "p99_ms"):
        assert key in summary
    assert summary["requests"] > 10 and summary["failures"] == 0
    assert summary["p50_ms"] <= summary["p95_ms"] <= summary["p99_ms"]
    assert set(summary["by_type"]) == {"valid", "repeated", "invalid"}
    assert summary["by_type"]["valid"]["requests"] > 0
    assert summary["parameters"]["users"] == 2
    for name in ("latency.png", "locust_report.html", "locust_stats.csv", "samples.jsonl"):
        assert (out / name).stat().st_size > 0, name
    assert "p99 ms" in result.stdout


def test_load_tools_refuse_non_loopback_targets():
    result = subprocess.run(
        [sys.executable, "-m", "loadtests", "--host", "http://10.0.0.1:8000", "--out", "/tmp/never"],
        cwd=ROOT, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode != 0
    assert "only 127.0.0.1" in result.stderr
