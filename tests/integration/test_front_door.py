"""The front door: Serve's HAProxy on port 8000, what it exposes, what it answers on its own when
an ingress replica fails, and that stopping the service frees every port it listened on.

Every error the service itself produces is checked through this same door by the other modules
(400, 404, 405, 413, 415 and 422 in test_http_api.py, 401 and 429 in test_keys.py, 408 and the
backpressure 503 in test_resilience.py): HAProxy passes their JSON bodies through unchanged.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import requests
import yaml
from ray import serve

from tests.images import photo_bytes
from tests.integration.serve_process import interrupt_and_wait, serve_config, wait_until_ready
from tests.integration.conftest import ROOT, ServicePorts, free_port, on_private_ports
from tests.integration.dying_ingress import DyingIngress

pytestmark = pytest.mark.integration
HOST = "127.0.0.1"  # serve_config.yaml's http_options.host
# HAProxy's text answer to a request it could not get answered (Ray's errorfile for 502/503/504).
HAPROXY_500_BODY = "Internal Server Error"


def listening(ports: set[int]) -> dict[int, set[str]]:
    """The addresses each of ``ports`` is listening on now, on this machine."""
    found: dict[int, set[str]] = {}
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port in ports:
            found.setdefault(conn.laddr.port, set()).add(conn.laddr.ip)
    return found


def test_only_haproxy_stats_and_metrics_listen_beyond_the_configured_host(service):
    ports: ServicePorts = service.ports
    bound = listening(ports.all())
    assert bound.get(ports.front_door) == {HOST}, bound
    assert bound.get(ports.fallback_proxy) == {HOST}, bound
    replica_ports = [port for port in ports.ingress_replicas if port in bound]
    assert replica_ports, f"no ingress replica listens in {ports.ingress_replicas}"
    assert all(bound[port] == {HOST} for port in replica_ports), bound
    # Ray 2.60 binds these two to every interface and has no setting for their address
    # (README, "Security"). If a Ray release adds one, this fails, and the README must change.
    beyond_host = {port for port, addresses in bound.items() if addresses != {HOST}}
    assert beyond_host == {ports.haproxy_stats, ports.haproxy_metrics}, bound


def test_haproxy_serves_its_prometheus_metrics(service):
    text = requests.get(f"http://{HOST}:{service.ports.haproxy_metrics}/metrics", timeout=10).text
    assert "haproxy_frontend_http_requests_total" in text
    assert "haproxy_backend_active_servers" in text


def _both_replicas_answer(url: str, timeout_s: float = 120) -> None:
    """Wait until both replicas answer through HAProxy: it learns of a new or restarted replica
    by a reload, and a test that starts while one is in flight would measure the reload."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answers = set()
        for _ in range(8):
            with contextlib.suppress(requests.ConnectionError):  # a reload closing its connections
                answers.add(requests.get(url, timeout=10).text)
        if len({a for a in answers if a.startswith("alive")}) == 2:
            return
        time.sleep(0.5)
    pytest.fail(f"the two replicas of {url} did not both answer within {timeout_s:g} s")


@pytest.fixture
def dying_ingress(service):
    """dying_ingress.py, two replicas, at /dying on the session's front door; new for each test,
    since Serve backs off restarting a deployment whose replicas keep dying."""
    serve.run(DyingIngress.options(num_replicas=2).bind(), name="dying", route_prefix="/dying")
    yield service.url("/dying")
    serve.delete("dying")


def _die(url: str, body: bytes) -> tuple[str, float]:
    """What the client gets when the replica holding its request dies: "200" (HAProxy replayed it
    on the other replica), "text 500" (HAProxy's own answer), "json 503" (HAProxy had sent it to
    its backup, Serve's fallback proxy, whose edge middleware answers) or "closed" (no answer)."""
    _both_replicas_answer(url)
    flag = Path(tempfile.mkdtemp(prefix="die-")) / "flag"
    flag.touch()
    start = time.monotonic()
    try:
        response = requests.post(url + "/die", data=body, headers={"X-Die-Flag": str(flag)}, timeout=60)
    except requests.ConnectionError:
        return "closed", time.monotonic() - start
    seconds = time.monotonic() - start
    if response.status_code == 200 and response.text.startswith("alive"):
        return "200", seconds
    if response.status_code == 503:
        assert response.json()["error"]["code"] == "service_unavailable", response.text
        assert int(response.headers["Retry-After"]) >= 1, response.headers
        return "json 503", seconds
    assert (response.status_code, response.headers.get("Content-Type"), response.text.strip()) == (
        500, "text/plain", HAPROXY_500_BODY), response.text
    return "text 500", seconds


@pytest.mark.parametrize(("size", "answers"), [
    (1024, {"200", "text 500", "json 503", "closed"}),  # fits HAProxy's 16 KiB buffer: may be replayed
    (65536, {"text 500", "json 503", "closed"}),  # past it: never replayed
])
def test_a_request_whose_ingress_replica_dies_is_refused_or_replayed_never_hangs(dying_ingress, size, answers):
    outcomes = [_die(dying_ingress, b"x" * size) for _ in range(2)]
    print(f"\nreplica died under a {size}-byte request: {outcomes}")
    assert {answer for answer, _ in outcomes} <= answers, outcomes
    assert all(seconds < 30 for _, seconds in outcomes), outcomes


def _start(config_path: Path, address: str, log: Path, env: dict[str, str]) -> subprocess.Popen:
    serve_cli = Path(sys.executable).parent / "serve"
    with log.open("a") as out:
        return subprocess.Popen([str(serve_cli), "run", "--address", address, str(config_path)],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)


def _wait_until_free(ports: set[int], timeout_s: float = 120) -> dict[int, set[str]]:
    deadline = time.monotonic() + timeout_s
    while (still := listening(ports)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return still


def _wait_for_ray_start(head: subprocess.Popen, log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while "Ray runtime started" not in log.read_text(errors="replace"):
        assert head.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-2000:]
        time.sleep(0.5)


def test_stopping_frees_every_port_and_a_second_start_works(tmp_path_factory):
    """The README's sequence on a Ray instance of its own: `ray start --head`, `serve run`,
    Ctrl-C, `serve run` again, Ctrl-C, then the Ray instance stopped."""
    workdir = Path(tempfile.mkdtemp(prefix="ics-stop-", dir="/tmp"))  # short: Unix socket paths
    config = serve_config()
    ports = on_private_ports(config, free_port())
    config_path = tmp_path_factory.mktemp("stop") / "serve_config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    gcs_port = free_port()
    # Ray 2.60 starts a new instance with token authentication (token in ~/.ray); a client that
    # connects to it must be in token mode too.
    env = {**os.environ, "RAY_TMPDIR": str(workdir), "RAY_AUTH_MODE": "token"}
    head = subprocess.Popen(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={gcs_port}",
         f"--temp-dir={workdir}", "--include-dashboard=false", "--disable-usage-stats", "--num-cpus=2"],
        stdout=(workdir / "ray.log").open("w"), stderr=subprocess.STDOUT, env=env,
    )
    address, base_url, log = f"127.0.0.1:{gcs_port}", f"http://{HOST}:{ports.front_door}", workdir / "serve.log"
    front_door_pids: set[int] = set()
    try:
        _wait_for_ray_start(head, workdir / "ray.log")
        for attempt in ("first", "second"):
            serve_run = _start(config_path, address, log, env)
            try:
                try:
                    wait_until_ready(base_url, serve_run, 240)
                except RuntimeError as exc:
                    pytest.fail(f"{attempt} start: {exc}\n{log.read_text(errors='replace')[-3000:]}")
                answer = requests.post(base_url + "/v1/classify", data=photo_bytes("JPEG"), timeout=60)
                assert answer.status_code == 200, (attempt, answer.text)
                front_door_pids |= {conn.pid for conn in psutil.net_connections("tcp")
                                    if conn.status == psutil.CONN_LISTEN and conn.laddr.port == ports.front_door}
            finally:
                # serve run's Ctrl-C shuts Serve down: replicas drain (up to 20 s), HAProxy stops.
                interrupt_and_wait(serve_run, timeout_s=180)
            assert serve_run.returncode == 0, f"serve run did not shut Serve down after the {attempt} Ctrl-C"
            assert "failed to shut down" not in log.read_text(), f"Serve's controller was killed after the {attempt} Ctrl-C"
            assert _wait_until_free(ports.all()) == {}, f"still listening after the {attempt} Ctrl-C"
    finally:
        interrupt_and_wait(head, timeout_s=120)
        shutil.rmtree(workdir, ignore_errors=True)
    assert _wait_until_free(ports.all()) == {}, "still listening after the Ray instance stopped"
    assert front_door_pids, "no process was seen listening on the front door"
    assert not [pid for pid in front_door_pids if psutil.pid_exists(pid)], "an HAProxy outlived the service"
