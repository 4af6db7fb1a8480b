"""A short soak, run as an operator runs it: `python -m loadtests.soak` starts the service as
shipped (its own Ray instance, serve_config.yaml's ports), sends a steady mix for a few minutes,
kills an Inference and a Preprocessing replica under it, and reports. The 30-minute run with
every fault kind is in docs/resilience.md."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.integration.conftest import ROOT

pytestmark = pytest.mark.integration


def test_short_soak_with_replica_kills_answers_everything_and_counts_it_right(tmp_path):
    out = tmp_path / "soak"
    result = subprocess.run(
        [sys.executable, "-m", "loadtests.soak", "--minutes", "2.5", "--rps", "12", "--warmup", "30",
         "--fault-every", "45", "--window", "40", "--faults", "kill-inference,kill-preprocessing", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=480,
    )
    assert (out / "soak.json").exists(), result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "soak.json").read_text())
    assert [f["name"] for f in report["faults"]] == ["kill-inference", "kill-preprocessing"]
    overall = report["overall"]
    assert overall["sent"] > 1000
    assert overall["hung"] == 0, report["unexpected_answers"]
    assert overall["5xx_outside_fault_windows"] == 0, report["unexpected_answers"]
    assert all(f["recovery_s"] < 40 for f in report["faults"]), report["faults"]
    counters = report["counters"]
    assert counters["cache hits"]["client"] > 0 and counters["cache misses"]["client"] > 0
    assert all(c["error"] <= 0.001 for c in counters.values()), counters
    # Every Serve process is watched for leaks, front door and controller included.
    watched = {row["name"] for row in report["processes"]}
    assert {"Ingress", "Validation", "Preprocessing", "Inference", "HAProxy", "HAProxy's manager",
            "Serve's controller"} <= watched, watched
    assert (out / "soak.png").stat().st_size > 0
    assert "targets:" in (out / "summary.txt").read_text()
