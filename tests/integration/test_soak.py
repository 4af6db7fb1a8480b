"""Short soaks, run as an operator runs them: `python -m loadtests.soak` starts the service as
shipped (its own Ray cluster, serve_config.yaml's ports), sends a steady mix for a few minutes,
kills replicas (or, on two nodes, the worker node) under it, and reports. The 30-minute run with
every fault kind is in docs/resilience.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import ROOT

pytestmark = pytest.mark.integration


def short_soak(out: Path, *options: str) -> tuple[dict, str]:
    """2.5 minutes at 12 requests/s, a fault at 30 s and another at 75 s: the report and the
    progress printed."""
    result = subprocess.run(
        [sys.executable, "-m", "loadtests.soak", "--minutes", "2.5", "--rps", "12", "--warmup", "30",
         "--fault-every", "45", "--window", "40", "--out", str(out), *options],
        cwd=ROOT, capture_output=True, text=True, timeout=480,
    )
    assert (out / "soak.json").exists(), result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((out / "soak.json").read_text()), result.stdout


def test_short_soak_with_replica_kills_answers_everything_and_counts_it_right(tmp_path):
    out = tmp_path / "soak"
    report, _ = short_soak(out, "--faults", "kill-inference,kill-preprocessing")
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


def test_short_soak_on_two_nodes_survives_the_worker_node_dying_twice(tmp_path):
    report, progress = short_soak(tmp_path / "soak", "--nodes", "2", "--faults", "kill-node")
    kills = [f for f in report["faults"] if f["name"] == "kill-node"]
    assert len(kills) == 2, report["faults"]
    # The second kill found a node to kill: the first one's replacement joined, and is reported.
    assert all(f["detail"].startswith("killed the worker node") for f in kills), kills
    assert [f for f in report["faults"] if f["name"] == "node-join"], report["faults"]
    assert progress.count("a fresh worker node joined") >= 1, progress
    overall = report["overall"]
    assert overall["hung"] == 0, report["unexpected_answers"]
    assert overall["5xx_outside_fault_windows"] == 0, report["unexpected_answers"]
    assert all(f["recovery_s"] < 40 for f in report["faults"]), report["faults"]
    # Every node's front door was watched, the head's and the workers' (every reading is in raw.json).
    readings = json.loads((tmp_path / "soak" / "raw.json").read_text())["processes"]
    assert len({row["pid"] for row in readings if row["name"] == "HAProxy"}) >= 2, readings[-20:]
