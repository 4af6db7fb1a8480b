"""`python -m loadtests.capacity`, run as a user runs it, on a bench report of known figures."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GRAPH = {"Ingress": 8.0, "Inference": 8.0, "Preprocessing": 5.0, "Validation": 2.0, "the rest": 2.0}
# What `python -m loadtests.bench --out` writes, as far as the capacity model reads it.
BENCH_REPORT = {"median": {
    "haproxy": {"cpu_ms_per_request_by_part": {**GRAPH, "HAProxy": 5.0}},
    "proxy": {"cpu_ms_per_request_by_part": {**GRAPH, "Serve's proxy": 5.0}},
}}


@pytest.fixture
def capacity(tmp_path):
    report = tmp_path / "bench.json"
    report.write_text(json.dumps(BENCH_REPORT))

    def run(*args: str) -> dict:
        result = subprocess.run(
            [sys.executable, "-m", "loadtests.capacity", "--profile", str(report), "--json", *args],
            cwd=ROOT, capture_output=True, text=True, check=True,
        )
        return json.loads(result.stdout)

    return run


def test_throughput_grows_with_cpus_and_replicas_follow_each_stage_cost(capacity):
    small, large = capacity("--cpus", "2"), capacity("--cpus", "32", "--nodes", "8")
    assert round(small["saturation_rps"]) == 67  # 2000 ms of CPU per second / 30 ms per request
    assert small["bound_by"] == "CPUs"
    assert large["rps"] == pytest.approx(16 * small["rps"])
    assert large["replicas"]["Inference"] > large["replicas"]["Validation"] >= 1
    assert set(large["replicas"]) == {"Ingress", "Inference", "Preprocessing", "Validation"}


def test_serve_proxy_on_the_head_caps_the_cluster_however_many_nodes_it_has(capacity):
    for nodes in ("1", "4"):
        result = capacity("--door", "proxy", "--cpus", "64", "--nodes", nodes)
        assert (result["bound_by"], result["saturation_rps"]) == ("front door", 1000 / 5.0)


def test_haproxy_on_every_node_adds_a_door_with_each_node(capacity):
    one, two = capacity("--cpus", "64"), capacity("--cpus", "64", "--nodes", "2")
    assert one["limits"]["front door"] == 1000 / 5.0  # serve_config.yaml's one HAProxy thread, at 5 ms
    assert two["limits"]["front door"] == 2 * one["limits"]["front door"]
    assert two["saturation_rps"] > one["saturation_rps"]


def test_gpus_take_the_forward_pass_off_the_cpu_and_cap_throughput(capacity):
    with_gpu = capacity("--cpus", "16", "--gpus", "1", "--forward-ms", "5.4", "--nodes", "4")
    assert with_gpu["cpu_ms_per_request"]["Inference"] == pytest.approx(8.0 - 5.4)
    assert (with_gpu["bound_by"], with_gpu["saturation_rps"]) == ("GPUs", 1000 / 2.9)


def test_without_a_report_it_plans_from_the_shipped_bench_report_for_each_door():
    for door in ("haproxy", "proxy"):
        result = subprocess.run([sys.executable, "-m", "loadtests.capacity", "--cpus", "2", "--door", door],
                                cwd=ROOT, capture_output=True, text=True, check=True)
        assert "requests/s" in result.stdout and "Inference" in result.stdout
        assert f"CPU figures: {ROOT / 'docs' / 'bench.json'}" in result.stdout


def test_a_missing_bench_report_stops_it_with_a_message_naming_the_file(tmp_path):
    missing = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "-m", "loadtests.capacity", "--cpus", "2", "--profile", str(missing)],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and f"no bench report at {missing}" in result.stderr
