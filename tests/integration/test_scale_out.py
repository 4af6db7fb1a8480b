"""Scale-out: cache affinity across model replicas, a second node lost under load, and the
autoscaler adding and removing replicas, each against real Ray Serve."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import yaml
from ray import serve
from ray.util.state import list_actors

from common.settings import get_settings
from deployments.inference.deployment import Inference
from deployments.inference.spec import input_geometry
from deployments.preprocessing import Preprocessing
from deployments.validation import Validation
from serve_app.ingress import Ingress
from tests.images import distinct_photos
from tests.integration.conftest import (
    INFERENCE_REPLICAS,
    ROOT,
    free_port,
    on_private_ports,
)
from tests.integration.metrics import scrape, wait_for
from tests.integration.serve_process import (
    deployment_config,
    interrupt_and_wait,
    serve_config,
    wait_until_ready,
)

pytestmark = pytest.mark.integration
APP = "image-classifier"


def _calls_by_model_replica(service) -> dict[str, float]:
    """Lookups and classifications each replica of the default model answered (Serve's counter)."""
    calls: dict[str, float] = defaultdict(float)
    for s in scrape(service):
        if (s.name == "ray_serve_deployment_request_counter_total" and s.labels.get("application") == APP
                and s.labels.get("deployment") == "Inference"):
            calls[s.labels["replica"]] += s.value
    return calls


def test_repeats_reach_the_replica_that_cached_them(service):
    images = distinct_photos(24, size=(160, 120), salt=os.urandom(8))
    before = _calls_by_model_replica(service)

    def cached(data: bytes) -> bool:
        response = requests.post(service.url("/v1/classify"), data=data, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()["cached"]

    with ThreadPoolExecutor(4) as pool:
        assert not any(pool.map(cached, images)), "first sends are misses"
        repeats = list(pool.map(cached, images * 2))
    assert sum(repeats) >= 0.9 * len(repeats), f"{sum(repeats)} of {len(repeats)} repeats were hits"

    def replicas_that_took_new_images() -> set[str] | None:
        took = {replica for replica, calls in _calls_by_model_replica(service).items() if calls > before.get(replica, 0)}
        return took if len(took) >= INFERENCE_REPLICAS else None

    assert wait_for(replicas_that_took_new_images), "the new images were not spread over both model replicas"


class TwoNodeCluster:
    """tests/integration/two_node_cluster.py in its own process: a head and a worker node."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("two_node_cluster.py")), str(workdir), str(free_port())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=(workdir / "cluster.log").open("w"), text=True,
        )
        self.addresses = json.loads(self.process.stdout.readline())

    def kill_worker(self) -> None:
        self.process.stdin.write("kill-worker\n")
        self.process.stdin.flush()
        assert json.loads(self.process.stdout.readline()) == {"killed": True}

    def placement(self) -> dict[str, list[str]]:
        """Which node each live replica runs on, through Ray's state API: {"ServeReplica:…": ["head", …]}."""
        nodes = {self.addresses["head"]: "head", self.addresses["worker"]: "worker"}
        placement = defaultdict(list)
        for actor in list_actors(address=self.addresses["dashboard"], filters=[("state", "=", "ALIVE")], limit=1000):
            if actor.class_name.startswith("ServeReplica:"):
                placement[actor.class_name].append(nodes.get(actor.node_id, actor.node_id))
        return placement

    def close(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            interrupt_and_wait(self.process)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _nodes(placement: dict[str, list[str]]) -> set[str]:
    """The nodes that run any replica of a :meth:`TwoNodeCluster.placement`."""
    return {node for nodes in placement.values() for node in nodes}


def _steady_load(url: str, stop: threading.Event, outcomes: list) -> None:
    images = iter(distinct_photos(3000, size=(96, 72), salt=os.urandom(8)))
    with requests.Session() as session:
        while not stop.is_set():
            start = time.monotonic()
            try:
                response = session.post(url + "/v1/classify", data=next(images), timeout=60)
                answer = (response.status_code, response.headers.get("Retry-After"),
                          response.json().get("error", {}).get("code"))
            except (requests.RequestException, ValueError) as exc:
                answer = (None, None, repr(exc))
            outcomes.append((start, time.monotonic() - start, answer))


def test_each_node_has_a_front_door_and_losing_a_node_under_load_fails_under_1_percent(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("two-nodes")
    # A short path: Ray's Unix sockets live under it and have a 107-byte limit.
    cluster = TwoNodeCluster(Path(tempfile.mkdtemp(prefix="ics2-", dir="/tmp")))
    config = serve_config()
    ports = on_private_ports(config, free_port())
    worker_port = free_port()
    # Two nodes share this machine's loopback: the worker node's HAProxy takes its own port
    # (Ray's knob for exactly this), and both share the stats and metrics ports. Nothing else
    # differs from the shipped config.
    config["controller_options"]["runtime_env"]["env_vars"].update({
        "RAY_SERVE_WORKER_PROXY_HTTP_PORT": str(worker_port), "SERVE_SOCKET_REUSE_PORT_ENABLED": "1"})
    config_path = workdir / "serve_config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    serve_cli = Path(sys.executable).parent / "serve"
    with (workdir / "serve_run.log").open("w") as log:
        serve_run = subprocess.Popen([str(serve_cli), "run", "--address", cluster.addresses["gcs_address"],
                                      str(config_path)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    head_url, worker_url = f"http://127.0.0.1:{ports.front_door}", f"http://127.0.0.1:{worker_port}"
    try:
        wait_until_ready(head_url, serve_run, 240)
        wait_until_ready(worker_url, serve_run, 60)
        before = cluster.placement()
        assert _nodes(before) == {"head", "worker"}, before
        photo = distinct_photos(1, size=(96, 72), salt=os.urandom(8))[0]
        for url in (head_url, worker_url):
            assert requests.post(url + "/v1/classify", data=photo, timeout=60).status_code == 200, url
        controller_log = "".join(p.read_text(errors="replace")
                                 for p in cluster.workdir.glob("session_latest/logs/serve/controller_*.log"))
        assert "replacing Serve proxy with HAProxy" in controller_log
        assert "enabling proxy on head node only" not in controller_log

        stop, outcomes = threading.Event(), []
        with ThreadPoolExecutor(2) as pool:
            for _ in range(2):
                pool.submit(_steady_load, head_url, stop, outcomes)
            time.sleep(3)
            killed_at = time.monotonic()
            cluster.kill_worker()
            deadline = killed_at + 150
            while time.monotonic() < deadline:
                recent = [answer for start, _, answer in outcomes[-10:] if start > killed_at + 1]
                if len(recent) == 10 and all(status == 200 for status, *_ in recent):
                    break
                time.sleep(1)
            recovered_at = time.monotonic()
            time.sleep(5)  # requests after recovery
            stop.set()
        # The default model answers first; a model no request waits for (the worker may have held
        # its only replica) comes back when Serve has noticed the node's death and started it anew.
        after = cluster.placement()
        while (time.monotonic() < deadline and
               (set(after) != set(before) or _nodes(after) != {"head"})):
            time.sleep(1)
            after = cluster.placement()
        replaced_at = time.monotonic()
    finally:
        interrupt_and_wait(serve_run)
        cluster.close()

    failed = [answer for _, _, answer in outcomes if answer[0] != 200]
    slowest = max(seconds for _, seconds, _ in outcomes)
    after_recovery = [answer for start, _, answer in outcomes if start >= recovered_at]
    print(f"\nnode kill: {len(outcomes)} requests through the surviving node's front door, "
          f"{len(failed)} not 200 {failed}; slowest {slowest:.1f} s; "
          f"10 straight 200s {recovered_at - killed_at:.1f} s after the kill; "
          f"{len(after_recovery)} requests after that; every deployment back {replaced_at - killed_at:.1f} s after it")
    assert recovered_at - killed_at < 150, "the service did not recover on the head node"
    assert _nodes(after) == {"head"}, after
    assert set(before) == set(after), "every deployment has a replica again within 150 s"
    assert len(failed) <= 0.01 * len(outcomes), failed
    assert slowest < 30, "a request hung past the request timeout"
    assert after_recovery and all(answer[0] == 200 for answer in after_recovery), after_recovery


def test_autoscaler_adds_a_replica_under_load_and_removes_it_when_load_stops(service):
    shipped = deployment_config(serve_config(), "Inference")["autoscaling_config"]
    # The shipped config's policy from one replica, with short delays, so the test takes seconds.
    quick = {**shipped, "min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1, "upscale_delay_s": 1,
             "downscale_delay_s": 5, "look_back_period_s": 2}
    free = {"ray_actor_options": {"num_cpus": 0}}
    app = Ingress.options(**free).bind(
        Validation.options(**free).bind(), Preprocessing.options(**free).bind(input_geometry(get_settings())),
        Inference.options(autoscaling_config=quick, **free).bind(),
    )
    serve.run(app, name="autoscale", route_prefix="/autoscale")

    def running_inference_replicas() -> int:
        deployment = serve.status().applications["autoscale"].deployments["Inference"]
        return deployment.replica_states.get("RUNNING", 0)

    try:
        assert running_inference_replicas() == 1
        stop, outcomes = threading.Event(), []
        started = time.monotonic()
        with ThreadPoolExecutor(6) as pool:
            for _ in range(6):
                pool.submit(_steady_load, service.url("/autoscale"), stop, outcomes)
            scaled_up = wait_for(lambda: running_inference_replicas() >= 2, timeout_s=90)
            up_in = time.monotonic() - started
            stop.set()
        stopped = time.monotonic()
        scaled_down = wait_for(lambda: running_inference_replicas() == 1, timeout_s=90)
        down_in = time.monotonic() - stopped
    finally:
        serve.delete("autoscale")
    print(f"\nautoscaling: 1 -> 2 Inference replicas {up_in:.0f} s after load started, "
          f"back to 1 {down_in:.0f} s after it stopped; {len(outcomes)} requests")
    assert scaled_up, "no second replica under load"
    assert scaled_down, "the extra replica stayed after the load stopped"
    assert all(answer[0] == 200 for _, _, answer in outcomes)
