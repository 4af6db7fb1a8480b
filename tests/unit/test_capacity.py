from loadtests.capacity import plan

PROFILE = {"rps": 60, "cpus": 2, "cpu_ms_per_request": {
    "Ingress": 8.0, "Inference": 8.0, "Proxy": 5.0, "Preprocessing": 5.0, "Validation": 2.0,
    "Ray (controller, daemons)": 2.0,
}}


def test_throughput_grows_with_cpus_and_replicas_follow_each_stage_cost():
    small, large = plan(PROFILE, cpus=2), plan(PROFILE, cpus=32, nodes=8)
    assert round(small["saturation_rps"]) == 67  # 2000 ms of CPU per second / 30 ms per request
    assert large["rps"] == 16 * small["rps"]
    assert large["replicas"]["Inference"] > large["replicas"]["Validation"] >= 1
    assert set(large["replicas"]) == {"Ingress", "Inference", "Preprocessing", "Validation"}


def test_one_node_is_capped_by_its_one_proxy_however_many_cpus_it_has():
    assert plan(PROFILE, cpus=64)["saturation_rps"] == 1000 / 5.0
    assert plan(PROFILE, cpus=64, nodes=2)["saturation_rps"] == 2 * 1000 / 5.0


def test_gpus_take_the_forward_pass_off_the_cpu_and_cap_throughput():
    with_gpu = plan(PROFILE, cpus=16, gpus=1, forward_ms=5.4, nodes=4)
    assert with_gpu["cpu_ms_per_request"]["Inference"] == 8.0 - 5.4
    assert with_gpu["saturation_rps"] == 1000 / 4.0
