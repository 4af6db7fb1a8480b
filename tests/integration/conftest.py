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
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import ray
import requests
import yaml

from serve_app.keys import new_key
from tests.integration.serve_process import interrupt_and_wait, serve_config, wait_until_ready

ROOT = Path(__file__).resolve().parents[2]
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
KEY_IDS = ("rotated-out", "rotated-in", "limited")
RATE_LIMIT = {"RATE_LIMIT_RPS": "0.5", "RATE_LIMIT_BURST": "2"}
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
    direct_ports: range  # the ingress replicas' own ports (Serve's direct ingress)

    def url(self, path: str) -> str:
        return self.base_url + path

    def direct_url(self, path: str) -> str:
        """``path`` on the own port of an ingress replica of the application that serves it,
        skipping Serve's proxy. Each such port names the route prefix it serves at ``/-/routes``."""
        prefix = next((p for p in (NO_CACHE_PREFIX, SECURED_PREFIX) if path.startswith(p + "/")), "/")
        for port in self.direct_ports:
            with contextlib.suppress(requests.RequestException):
                if prefix in requests.get(f"http://127.0.0.1:{port}/-/routes", timeout=5).json():
                    return f"http://127.0.0.1:{port}{path}"
        raise AssertionError(f"no ingress replica serves {prefix} on ports {self.direct_ports}")

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


def on_private_ports(config: dict, port: int) -> range:
    """Move ``config``'s proxy to ``port`` and its ingress replicas' own ports (8200-8209 as
    shipped) to a free block of the same size, so that a test cluster uses no shipped port.
    Returns the block."""
    config["http_options"]["port"] = port
    env = config["controller_options"]["runtime_env"]["env_vars"]
    count = int(env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"]) - int(env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"]) + 1
    first = free_port_block(count)
    env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"] = str(first)
    env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"] = str(first + count - 1)
    return range(first, first + count)


def _tight(deployment: dict) -> dict:
    """One replica with a tiny queue, so a test burst is far past its capacity. Inference gets
    twice its batch size, as the README asks: the requests of the batch in flight hold their slots."""
    tight = {k: v for k, v in deployment.items() if k != "autoscaling_config"}
    limit = {"Ingress": 4, "Inference": 2 * int(NO_CACHE_ENV["MODEL_MAX_BATCH_SIZE"])}.get(deployment["name"], 2)
    return {**tight, "num_replicas": 1, "max_ongoing_requests": limit, "max_queued_requests": limit}


def _two_model_replicas(deployment: dict) -> dict:
    """Two Inference replicas at half a CPU each, so the cache-affinity router has a choice."""
    if deployment["name"] != "Inference":
        return deployment
    fixed = {k: v for k, v in deployment.items() if k != "autoscaling_config"}
    return {**fixed, "num_replicas": INFERENCE_REPLICAS, "ray_actor_options": {"num_cpus": 0.5}}


def _secured(deployment: dict) -> dict:
    """One replica, reserving no CPU: the keyed copy of the app serves only a few requests."""
    fixed = {k: v for k, v in deployment.items() if k != "autoscaling_config"}
    return {**fixed, "num_replicas": 1, "ray_actor_options": {"num_cpus": 0}}


def _test_config(port: int, keys_file: Path) -> tuple[dict, range]:
    """serve_config.yaml on test ports, with two fixed Inference replicas, plus a cache-disabled
    copy of the app with one replica per deployment and tight queue limits (the overload tests use
    it), and a copy with API keys and a rate limit; and the ingress replicas' own ports."""
    config = serve_config()
    direct_ports = on_private_ports(config, port)
    config["http_options"]["request_timeout_s"] = REQUEST_TIMEOUT_S
    (app,) = config["applications"]
    shipped = app["deployments"]  # each copy below builds new deployment dicts from these
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
        "deployments": [_secured(d) for d in shipped],
    }
    config["applications"] += [no_cache, secured]
    return config, direct_ports


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
    config, direct_ports = _test_config(port, keys_file)
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
                             ("/readyz", NO_CACHE_PREFIX + "/readyz", SECURED_PREFIX + "/readyz"))
        except RuntimeError as exc:
            pytest.fail(f"{exc}:\n{log_path.read_text()[-4000:]}")
        yield Service(
            base_url, log_path, workdir / "ray" / "session_latest" / "logs",
            f"http://127.0.0.1:{metrics_port}/metrics", api_keys, direct_ports,
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


@pytest.fixture(params=["proxy", "direct"])
def front_door(request, service: Service) -> Callable[[str], str]:
    """A path's URL through Serve's proxy (port 8000 as shipped), or straight to the ingress
    replica's own port (8200 as shipped): a client must get the same service through either."""
    return service.url if request.param == "proxy" else service.direct_url
