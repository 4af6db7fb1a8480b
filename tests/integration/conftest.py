"""One real Ray cluster and one real `serve run` of serve_config.yaml per test session.

The cluster runs in a private temp dir with no dashboard, and the HTTP proxy on a free port, so
a development cluster on this machine is neither used nor disturbed. Settings reach the replicas
the way they do in production: through the environment of the processes Ray starts.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import ray
import yaml

from serve_app.keys import new_key
from tests.integration.serve_process import interrupt_and_wait, serve_config, wait_until_ready

ROOT = Path(__file__).resolve().parents[2]

# A run started in the background (`&` in a script, nohup) ignores SIGINT, and the processes it
# starts inherit that: `serve run` would ignore the Ctrl-C with which the tests stop it, and be
# killed instead, leaving Serve running. A handler of our own is reset to the default at exec.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
STARTUP_TIMEOUT_S = 240

# Non-default values, so the tests prove the environment reaches the replicas.
SERVICE_ENV = {
    "MODEL_CACHE_SIZE": "64",
    "ENABLE_MODEL_CACHE": "true",
    "MAX_UPLOAD_BYTES": str(2 * 1024 * 1024),
}
# The cache-disabled copy of the app runs the model on torch, so the graph is tested on both
# runtimes, and with @serve.batch grouping concurrent requests (its Inference takes 2 at a time).
NO_CACHE_ENV = {"ENABLE_MODEL_CACHE": "false", "MODEL_RUNTIME": "torch",
                "MODEL_MAX_BATCH_SIZE": "2", "MODEL_BATCH_WAIT_MS": "20"}
NO_CACHE_PREFIX = "/nocache"
# A third copy of the app, with API keys and a rate limit (test_keys.py).
SECURED_PREFIX = "/secured"
# A fourth, batching the simulated model of the benchmarks, as slow as the stall it guards against
# is easy to see (test_batching.py).
BATCHED_PREFIX = "/batched"
BATCHED_ENV = {"ENABLE_MODEL_CACHE": "false", "MODEL_MAX_BATCH_SIZE": "16",
               "MODEL_RUNTIME": "deployments.inference.simulated:SimulatedRuntime?batch_ms=300"}
KEY_IDS = ("rotated-out", "steady", "limited")
RATE_LIMIT = {"RATE_LIMIT_RPS": "0.5", "RATE_LIMIT_BURST": "2"}
# A fifth copy serves the shipped model repository (Lite0, the default, Lite1 and Lite2) at its
# own prefix (test_models.py); the others serve the one model MODEL_NAME names, as before
# repositories. Each model gets a quarter CPU, so the session fits its 4 logical CPUs; one model
# gets two replicas, so its cache affinity is tested.
MODELS_PREFIX = "/models"
TWO_REPLICA_MODEL = "efficientnet-lite1"
# Shorter than serve_config.yaml's 30 s, so the timeout tests are quick.
REQUEST_TIMEOUT_S = 15
INFERENCE_REPLICAS = 2


@dataclass(frozen=True)
class Service:
    base_url: str
    log_path: Path
    ray_logs: Path
    metrics_url: str
    api_keys: dict[str, str]  # key_id -> key, for the app at SECURED_PREFIX
    api_keys_file: Path  # that app's API_KEYS_FILE
    ports: ServicePorts

    def url(self, path: str) -> str:
        return self.base_url + path

    def replica_logs(self, deployment: str) -> str:
        return "".join(
            p.read_text(errors="replace")
            for p in self.ray_logs.glob(f"serve/replica_image-classifier_{deployment}_*.log")
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_port_block(count: int) -> int:
    """The first of ``count`` consecutive ports that are free on 127.0.0.1 now, between Ray's
    worker ports (up to 19999) and its default direct-ingress ports (from 30000)."""
    for _ in range(100):
        first = random.randrange(20000, 30000 - count)
        with contextlib.ExitStack() as bound:
            try:
                for port in range(first, first + count):
                    bound.enter_context(socket.socket()).bind(("127.0.0.1", port))
            except OSError:
                continue
        return first
    raise RuntimeError(f"no {count} consecutive free ports found")


@dataclass(frozen=True)
class ServicePorts:
    """Every TCP port the service listens on, as moved by :func:`on_private_ports`."""

    front_door: int  # HAProxy (8000 as shipped)
    ingress_replicas: range  # the ingress replicas' own ports (8200-8209), HAProxy's backends
    fallback_proxy: int  # Serve's Python proxy on the head, HAProxy's backup (8500)
    haproxy_stats: int  # 8404
    haproxy_metrics: int  # 9101

    def all(self) -> set[int]:
        return {self.front_door, *self.ingress_replicas, self.fallback_proxy, self.haproxy_stats, self.haproxy_metrics}


def on_private_ports(config: dict, port: int) -> ServicePorts:
    """Move every port of ``config``'s front door to free ones, so that a test cluster uses no
    shipped port and disturbs no service running on this machine: HAProxy to ``port``, its
    stats and metrics, Serve's fallback proxy, and the ingress replicas' own ports (8200-8209 as
    shipped) to a free block."""
    config["http_options"]["port"] = port
    env = config["controller_options"]["runtime_env"]["env_vars"]
    # More than the shipped 10: a test session runs several apps and kills ingress replicas again
    # and again, and Serve never hands out again a port that a starting replica found in use.
    count = max(40, int(env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"]) - int(env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"]) + 1)
    first = free_port_block(count)
    ports = ServicePorts(port, range(first, first + count), free_port(), free_port(), free_port())
    env.update({
        "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(first),
        "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(first + count - 1),
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(ports.fallback_proxy),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(ports.haproxy_stats),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(ports.haproxy_metrics),
    })
    return ports


def _fixed(deployment: dict, replicas: int, num_cpus: float | None = None) -> dict:
    """``deployment`` with a fixed number of replicas in place of its autoscaling, and, where
    given, its CPU reservation changed; the rest of its ray_actor_options (runtime_env) kept."""
    fixed = {k: v for k, v in deployment.items() if k != "autoscaling_config"}
    if num_cpus is not None:
        fixed["ray_actor_options"] = {**deployment["ray_actor_options"], "num_cpus": num_cpus}
    return {**fixed, "num_replicas": replicas}


def _tight(deployment: dict) -> dict:
    """One replica with a tiny queue, so a test burst is far past its capacity. Inference gets
    twice its batch size, as the README asks: the requests of the batch in flight hold their slots."""
    limit = {"Ingress": 4, "Inference": 2 * int(NO_CACHE_ENV["MODEL_MAX_BATCH_SIZE"])}.get(deployment["name"], 2)
    return {**_fixed(deployment, 1), "max_ongoing_requests": limit, "max_queued_requests": limit}


def _two_model_replicas(deployment: dict) -> dict:
    """Two Inference replicas at half a CPU each, so the cache-affinity router has a choice."""
    if deployment["name"] != "Inference":
        return deployment
    return _fixed(deployment, INFERENCE_REPLICAS, num_cpus=0.5)


def _one_replica_reserving_no_cpu(deployment: dict) -> dict:
    """One replica, reserving no CPU: the keyed and the batched copies of the app serve only a few
    requests."""
    return _fixed(deployment, 1, num_cpus=0)


def _models_replicas(deployment: dict) -> dict:
    """One replica of each deployment, two of TWO_REPLICA_MODEL's; a quarter CPU per model replica."""
    replicas = 2 if deployment["name"] == f"Inference-{TWO_REPLICA_MODEL}" else 1
    return _fixed(deployment, replicas, num_cpus=0.25 if deployment["name"].startswith("Inference") else 0)


def _test_config(port: int, keys_file: Path) -> tuple[dict, ServicePorts]:
    """serve_config.yaml on test ports, serving the model MODEL_NAME names with two fixed Inference
    replicas, plus a cache-disabled copy of the app with one replica per deployment and tight queue
    limits (the overload tests use it), a copy with API keys and a rate limit, one batching a
    simulated model, and one serving the shipped model repository; and the ports it listens on."""
    config = serve_config()
    ports = on_private_ports(config, port)
    config["http_options"]["request_timeout_s"] = REQUEST_TIMEOUT_S
    (app,) = config["applications"]
    models = {**app, "name": "image-classifier-models", "route_prefix": MODELS_PREFIX,
              "deployments": [_models_replicas(d) for d in app["deployments"]]}
    del app["args"]
    # each copy below builds new deployment dicts from these
    shipped = [d for d in app["deployments"] if not d["name"].startswith("Inference-")]
    app["deployments"] = [_two_model_replicas(d) for d in shipped]
    no_cache = {
        **app,
        "name": "image-classifier-nocache",
        "route_prefix": NO_CACHE_PREFIX,
        "runtime_env": {"env_vars": NO_CACHE_ENV},
        "deployments": [_tight(d) for d in shipped],
    }
    secured = {
        **app, "name": "image-classifier-secured", "route_prefix": SECURED_PREFIX,
        "runtime_env": {"env_vars": {"API_KEYS_FILE": str(keys_file), **RATE_LIMIT}},
        "deployments": [_one_replica_reserving_no_cpu(d) for d in shipped],
    }
    batched = {
        **app, "name": "image-classifier-batched", "route_prefix": BATCHED_PREFIX,
        "runtime_env": {"env_vars": BATCHED_ENV},
        "deployments": [_one_replica_reserving_no_cpu(d) for d in shipped],
    }
    config["applications"] += [no_cache, secured, batched, models]
    return config, ports


@pytest.fixture(scope="session")
def service() -> Service:
    # Short path: Ray's Unix sockets live under it and have a 107-byte limit.
    workdir = Path(tempfile.mkdtemp(prefix="ics-", dir="/tmp"))
    port, metrics_port = free_port(), free_port()
    saved_env = {k: os.environ.get(k) for k in [*SERVICE_ENV, "COMPILED_MODEL_DIR"]}
    # A private conversion cache: the session converts the model itself, and leaves ~/.cache alone.
    os.environ.update({**SERVICE_ENV, "COMPILED_MODEL_DIR": str(workdir / "compiled-models")})
    ray.init(
        address="local",
        num_cpus=4,  # logical CPUs: room for both apps' replicas on a 2-core machine
        include_dashboard=False,
        _temp_dir=str(workdir / "ray"),
        namespace="serve",
        log_to_driver=False,
        _metrics_export_port=metrics_port,
    )
    keys_file = workdir / "api-keys"
    api_keys = {key_id: new_key(key_id, keys_file) for key_id in KEY_IDS}
    config_path = workdir / "serve_config.yaml"
    config, ports = _test_config(port, keys_file)
    config_path.write_text(yaml.safe_dump(config))
    log_path = workdir / "serve_run.log"
    serve_cli = Path(sys.executable).parent / "serve"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [str(serve_cli), "run", "--address", ray.get_runtime_context().gcs_address, str(config_path)],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_until_ready(base_url, process, STARTUP_TIMEOUT_S,
                             ("/readyz", *(prefix + "/readyz" for prefix in
                                           (NO_CACHE_PREFIX, SECURED_PREFIX, BATCHED_PREFIX, MODELS_PREFIX))))
        except RuntimeError as exc:
            pytest.fail(f"{exc}:\n{log_path.read_text()[-4000:]}")
        yield Service(
            base_url, log_path, workdir / "ray" / "session_latest" / "logs",
            f"http://127.0.0.1:{metrics_port}/metrics", api_keys, keys_file, ports,
        )
    finally:
        interrupt_and_wait(process)
        ray.shutdown()
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(workdir, ignore_errors=True)
