"""A soak test: the service under a steady mixed load for a while, with faults on a schedule.

    python -m loadtests.soak [--minutes 10] [--nodes 1] [--rps R] [--fault-every 150] [--window 90]
        [--faults a,b,...] [--burst 1500] [--config serve_config.yaml] [--out soak-report]

It starts a Ray cluster of its own on this machine (private temp dir, dashboard and metrics on
free ports) and `serve run` on the config: one node, or with --nodes 2 a head and a worker node
(each its own raylet, object store and metrics agent, as tests/integration/test_scale_out.py
runs them; the worker's HAProxy on a free port; an ingress replica on each node, as
deploy/kuberay/rayservice.yaml runs a cluster, with its health checks of nodes; a replica of
every stage with one to spare on each node, as docs/deployment.md advises). The config's ports
(8000, 8200-8209, 8500, 8404, 9101) must be free. It measures capacity for 15 s (unless --rps),
then sends a steady open-loop mix at 70% of it for --minutes to the head node's front door: fresh
photos in four formats and two sizes, repeats of a few hot photos, multipart and raw bodies,
top_k 1, 3, 5 and 10, hostile uploads, and the Open Inference Protocol (v2) beside v1. Faults
come in turn every --fault-every seconds after a warm-up, each named and timestamped, acting as an
operator would (Ray's and Serve's APIs, the `serve` CLI):

- kill-inference, kill-preprocessing: `ray.kill` one replica of that deployment;
- wedge-runner: block one Inference replica's model thread for good (its health check fails);
- kill-node (--nodes 2 only): kill every process of the worker node at once, as a machine that
  dies; a fresh worker node joins when the fault's window ends, as a cluster's autoscaler would
  replace it, and is reported as a "node-join" with a window of its own, until the next fault
  (on one machine its start-up takes CPU from the running node);
- burst: --burst simultaneous fresh uploads, past the queue limits;
- redeploy: `serve deploy` of the config with every model's cache size changed (each Inference
  deployment's `user_config`, which Serve applies to the running replicas in place).

Writes to --out: soak.json (per fault window, whose requests are those sent during it or still
waiting for their answer when it opened, and overall: requests sent, answered, by status,
hung, recovery time against RECOVERY_PROMISE_S; RSS, open files and threads of every Serve process
over time, with their growth per hour after the first round of faults and over the whole run; the
service's own counters, read from each node's metrics endpoint, against the client's counts, and
the machine's net.unix.max_dgram_qlen, on which Serve's HTTP counter depends),
soak.png (the timeline), summary.txt, which is also printed, and raw.json (every request and
reading, written first). Exits 1 when a target is missed. Load goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import psutil
import ray
import requests
import yaml
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from ray import serve
from ray.cluster_utils import Cluster
from ray.util.state import list_actors

from loadtests.cpu import RAY, part_of
from loadtests.driver import NO_ANSWER, drive, percentile, require_loopback
from loadtests.photos import encode, make_unique, sample_photo
from loadtests.service import base_url, running_service, serve_config

APP = "image-classifier"
MODEL = "efficientnet-lite0"
FAULTS = ("kill-inference", "kill-preprocessing", "wedge-runner", "kill-node", "burst", "redeploy")
# Not a fault: the fresh worker node that replaces a killed one, reported with a window of its own.
NODE_JOIN = "node-join"
ONE_NODE_FAULTS = tuple(fault for fault in FAULTS if fault != "kill-node")
TOP_KS = (1, 3, 5, 10)
HOT_IMAGES = 8
SAMPLE_EVERY_S = 5
OBJECT_STORE_BYTES = 2**30  # per node; payloads travel over gRPC, so little is stored
# Ray's health checks of each node, as deploy/kuberay/rayservice.yaml's head sets them: a dead
# node is declared dead after about 3 s instead of Ray's 14 s (3 failed checks 1 s apart instead of
# 5 checks 3 s apart), so that Serve stops placing replacements on it sooner (docs/scaling.md).
NODE_HEALTH_CHECKS = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3}
PROCESS_WARMUP_S = 120
MIN_GROWTH_SPAN_S = 60  # a shorter series gives no slope worth reporting per hour
# How soon after each fault every request is again answered as expected within --slow seconds:
# what docs/resilience.md ("Soak") promises, and the soak checks.
RECOVERY_PROMISE_S = {"kill-inference": 30, "kill-preprocessing": 30, "wedge-runner": 45, "kill-node": 30,
                      "burst": 60, "redeploy": 30, NODE_JOIN: 30}
CACHE_SIZES = (256, 128)  # what each redeploy sets the cache size to, in turn
# Targets of issue 22's "Done when".
TARGET_EXPECTED_RATIO = 0.995
TARGET_RSS_GROWTH_PER_HOUR = 0.05
TARGET_COUNTER_ERROR = 0.001


@dataclass
class Sample:
    """One request: when it was sent (s since the soak began), how long it took, what came back."""

    kind: str
    sent_s: float
    seconds: float
    status: int
    expected: bool
    cached: bool | None = None  # a v1 200's "cached"; None where the answer does not say
    code: str | None = None  # an error answer's code, or the start of its text: who wrote it


@dataclass
class Fault:
    name: str
    at_s: float
    utc: str
    window_s: float
    detail: str = ""
    done_s: float | None = None  # when the operator's action finished (a redeploy is RUNNING again)


@dataclass
class Mix:
    """The payloads, made once: formats at two sizes to make unique per request, hot photos sent
    unchanged, and hostile uploads with the status each must get."""

    variants: list[tuple[str, bytes]]
    small_jpeg: bytes
    hot: list[bytes]
    hostile: list[tuple[bytes, int]]
    rng: random.Random = field(default_factory=lambda: random.Random(7))

    @classmethod
    def make(cls) -> Mix:
        photo = sample_photo()
        variants = [(fmt, encode(photo.resize(size, Image.Resampling.BILINEAR), fmt, quality=85))
                    for size in ((160, 120), (640, 480)) for fmt in ("JPEG", "PNG", "WEBP", "GIF")]
        hot = [encode(photo.resize((320 + 16 * i, 240)), "JPEG", quality=85) for i in range(HOT_IMAGES)]
        jpeg = encode(photo.resize((320, 240)), "JPEG")
        hostile = [(b"<html><body>not an image</body></html>", 415), (jpeg[: len(jpeg) // 2], 422),
                   (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, 422), (b"RIFF\x24\x00\x00\x00AVI LIST" + b"\x00" * 28, 415)]
        return cls(variants, variants[0][1], hot, hostile)

    def fresh(self) -> bytes:
        fmt, data = self.rng.choice(self.variants)
        return make_unique(fmt, data, os.urandom(16))


class Load:
    """The open-loop sender: requests at a steady rate whatever the service does, each on its own
    task, on an event loop in a thread of its own, every answer kept as a :class:`Sample`."""

    def __init__(self, url: str, rps: float, timeout_s: float, began: float) -> None:
        self.url, self.rps, self.timeout_s, self.began = url, rps, timeout_s, began
        self.mix = Mix.make()
        self.samples: list[Sample] = []
        self.loop = asyncio.new_event_loop()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.session = asyncio.run_coroutine_threadsafe(self._session(), self.loop).result()

    async def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=aiohttp.ClientTimeout(total=self.timeout_s))

    def request(self) -> tuple[str, str, dict, object, int]:
        """(kind, path, headers, body, expected status) of the next request of the steady mix."""
        roll, rng = self.mix.rng.random(), self.mix.rng
        if roll < 0.05:
            data, status = rng.choice(self.mix.hostile)
            return "hostile", "/v1/classify", {"Content-Type": "application/octet-stream"}, data, status
        if roll < 0.35:
            return "repeat", f"/v1/classify?top_k={rng.choice(TOP_KS)}", {}, rng.choice(self.mix.hot), 200
        if roll < 0.45:
            body = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                "data": [base64.b64encode(self.mix.fresh()).decode()]}]}
            return "v2", f"/v2/models/{MODEL}/infer", {"Content-Type": "application/json"}, json.dumps(body), 200
        path = f"/v1/classify?top_k={rng.choice(TOP_KS)}"
        if roll < 0.70:
            form = aiohttp.FormData()
            form.add_field("file", self.mix.fresh(), filename="photo", content_type="application/octet-stream")
            return "multipart", path, {}, form, 200
        return "raw", path, {"Content-Type": "application/octet-stream"}, self.mix.fresh(), 200

    async def send(self, kind: str, path: str, headers: dict, body, expected: set[int]) -> None:
        sent = time.monotonic()
        cached = code = None
        try:
            async with self.session.post(self.url + path, data=body, headers=headers) as response:
                answer = await response.read()
                status = response.status
            if status == 200 and path.startswith("/v1/"):
                cached = json.loads(answer)["cached"]
            elif status != 200:
                code = error_code(answer)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            status, code = NO_ANSWER, type(exc).__name__
        self.samples.append(Sample(kind, sent - self.began, time.monotonic() - sent, status, status in expected,
                                   cached, code))

    async def _steady(self, seconds: float) -> None:
        tasks = set()
        start = time.monotonic()
        for n in range(int(seconds * self.rps)):
            delay = start + n / self.rps - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.stopping.is_set():
                break
            kind, path, headers, body, expected = self.request()
            task = asyncio.ensure_future(self.send(kind, path, headers, body, {expected}))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)

    def steady(self, seconds: float):
        return asyncio.run_coroutine_threadsafe(self._steady(seconds), self.loop)

    def burst(self, count: int) -> None:
        """``count`` fresh uploads at once, each expecting an answer or a 503 refusal."""
        async def all_at_once() -> None:
            await asyncio.gather(*(self.send("burst", "/v1/classify", {"Content-Type": "application/octet-stream"},
                                             make_unique("JPEG", self.mix.small_jpeg, os.urandom(16)), {200, 503})
                                   for _ in range(count)))
        asyncio.run_coroutine_threadsafe(all_at_once(), self.loop)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.session.close(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()


def error_code(answer: bytes) -> str:
    try:
        return json.loads(answer)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return answer[:60].decode(errors="replace")


class ProcessSampler(threading.Thread):
    """RSS, open files and threads of every Serve process, every SAMPLE_EVERY_S seconds."""

    def __init__(self, began: float) -> None:
        super().__init__(daemon=True)
        self.began, self.rows, self.stopping = began, [], threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(SAMPLE_EVERY_S):
            now = time.monotonic() - self.began
            for process in psutil.Process().children(recursive=True):
                try:
                    name = serve_process_name(process.cmdline())
                    if name:
                        with process.oneshot():
                            self.rows.append({"t": now, "pid": process.pid, "name": name,
                                              "rss": process.memory_info().rss, "fds": process.num_fds(),
                                              "threads": process.num_threads()})
                except psutil.Error:  # it ended
                    continue


def serve_process_name(cmdline: list[str]) -> str | None:
    """A Serve process's part of the service (a deployment, a front door, the controller); None
    for Ray's daemons and the load's own processes."""
    command = " ".join(cmdline)
    part = part_of(command)
    if part != RAY:
        return part
    return "Serve's controller" if "ServeController" in command else None


class CounterScraper(threading.Thread):
    """The service's counters, read from each node's metrics endpoint as Prometheus would: every
    series' last value is kept, so a replica that is gone (or its node) still counts what it
    published; what it counted after its node's last scrape is lost, as it would be to Prometheus. The
    application's ingress counts every answer by status (its own, and the refusals Serve's edge
    writes: serve_app/edge.py) and each answered image's cache hit or miss; these are compared with
    the client. Where Serve's fallback proxy answers (HAProxy's backup, while it deems every
    ingress replica down), the same edge counts its refusals there, without an application label:
    Ray labels only replicas' metrics. The soak serves one application, so those are its, and are
    reported apart. Serve's own HTTP counter is kept beside them, for the record."""

    NAMES = ("ray_serve_num_http_requests_total", "ray_image_requests_total", "ray_image_cache_hits_total",
             "ray_image_cache_misses_total")

    def __init__(self, metrics_urls: list[str]) -> None:
        super().__init__(daemon=True)
        self.metrics_urls, self.series, self.stopping = metrics_urls, {}, threading.Event()

    def scrape(self) -> None:
        for url in self.metrics_urls:
            with contextlib.suppress(requests.RequestException):  # a node that is down
                text = requests.get(url, timeout=10).text
                for family in text_string_to_metric_families(text):
                    for s in family.samples:
                        application = s.labels.get("application")
                        if s.name in self.NAMES and (application == APP or (
                                application is None and s.name == "ray_image_requests_total")):
                            self.series[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def run(self) -> None:
        while not self.stopping.wait(SAMPLE_EVERY_S):
            self.scrape()

    def totals(self) -> dict:
        serve_by_status: collections.Counter = collections.Counter()
        app_by_status: collections.Counter = collections.Counter()
        fallback_proxy_by_status: collections.Counter = collections.Counter()
        serve_by_route: collections.Counter = collections.Counter()
        hits = misses = 0.0
        for (name, labels), value in self.series.items():
            labels = dict(labels)
            if name == "ray_serve_num_http_requests_total":
                serve_by_status[labels.get("status_code")] += value
                serve_by_route[f"{labels.get('method')} {labels.get('route')} {labels.get('status_code')}"] += value
            elif name == "ray_image_requests_total":
                app_by_status[labels.get("status")] += value
                if "application" not in labels:
                    fallback_proxy_by_status[labels.get("status")] += value
            elif name == "ray_image_cache_hits_total":
                hits += value
            else:
                misses += value
        return {"requests_by_status": dict(app_by_status),
                "fallback_proxy_requests_by_status": dict(fallback_proxy_by_status),
                "serve_requests_by_status": dict(serve_by_status),
                "serve_requests_by_route": dict(serve_by_route), "cache_hits": hits, "cache_misses": misses}

    def settle(self, timeout_s: float = 90) -> None:
        """Scrape until the counters stop moving: Ray's agent publishes every few seconds."""
        deadline, last = time.monotonic() + timeout_s, None
        while time.monotonic() < deadline:
            self.scrape()
            if self.totals() == last:
                return
            last = self.totals()
            time.sleep(12)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Nodes:
    """The soak's Ray cluster on this machine (``ray.cluster_utils.Cluster``): a head node and,
    with ``worker``, a worker node, each with ``num_cpus`` logical CPUs (default: the machine's)
    and a metrics endpoint on a port of its own. A killed worker's replacement takes its ports."""

    def __init__(self, folder: Path, num_cpus: int | None, worker: bool) -> None:
        self.num_cpus = num_cpus or os.cpu_count()
        # Cluster writes the address file for `ray.init()` to Ray's default temp dir whatever
        # temp_dir says (and fails where /tmp/ray does not exist): under the private folder, it
        # neither fails nor points a user's own `ray.init()` at this cluster.
        os.environ["RAY_TMPDIR"] = str(folder)
        dashboard_port, self.metrics_ports = free_port(), [free_port()]
        self.dashboard = f"http://127.0.0.1:{dashboard_port}"
        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": self.num_cpus, "temp_dir": str(folder / "ray"), "include_dashboard": True,
            "dashboard_host": "127.0.0.1", "dashboard_port": dashboard_port,
            "metrics_export_port": self.metrics_ports[0], "object_store_memory": OBJECT_STORE_BYTES,
            "_system_config": NODE_HEALTH_CHECKS})
        self.worker = None
        self.worker_http_port = free_port() if worker else None
        if worker:
            self.metrics_ports.append(free_port())
            try:
                self.add_worker()
            except BaseException:  # the caller gets no Nodes to shut down
                self.cluster.shutdown()
                raise

    @property
    def gcs_address(self) -> str:
        return self.cluster.address

    @property
    def metrics_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}/metrics" for port in self.metrics_ports]

    def configure(self, config: dict) -> None:
        """What the config needs on two nodes, in place, as docs/deployment.md advises for a cluster:

        - nodes on one machine share its loopback, so the worker's HAProxy takes a port of its own
          (Ray's knob for exactly this), and both share the stats and metrics ports;
        - every stage with a replica to spare keeps one on each node, so that a node's death leaves
          each stage a replica while Serve replaces the lost ones (Ray spreads replicas best effort
          only, and a stage whose replicas all sat on the dead node answered nothing for the 6-8 s
          its replacement took to start): the ingress and validation with one replica per node
          (max_replicas_per_node 1, min_replicas 2), the stages that already run two replicas at
          least with one more than fit on a node (the default model at most half its max_replicas
          per node). The other models run one replica by choice, and stay as they are."""
        if self.worker_http_port is None:
            return
        config["controller_options"]["runtime_env"]["env_vars"].update({
            "RAY_SERVE_WORKER_PROXY_HTTP_PORT": str(self.worker_http_port), "SERVE_SOCKET_REUSE_PORT_ENABLED": "1"})
        (app,) = config["applications"]
        for deployment in app["deployments"]:
            scaling = deployment["autoscaling_config"]
            if deployment["name"] in ("Ingress", "Validation"):
                deployment["max_replicas_per_node"] = 1
            elif scaling["min_replicas"] >= 2:
                deployment.setdefault("max_replicas_per_node", -(-scaling["max_replicas"] // 2))
            else:
                continue
            scaling["min_replicas"] = max(scaling["min_replicas"], deployment["max_replicas_per_node"] + 1)

    def add_worker(self) -> None:
        self.worker = self.cluster.add_node(num_cpus=self.num_cpus, metrics_export_port=self.metrics_ports[1],
                                            object_store_memory=OBJECT_STORE_BYTES)

    def kill_worker(self) -> str:
        """Kills every process of the worker node at once; what it ran."""
        alive = list_actors(filters=[("state", "=", "ALIVE")], limit=10000)
        doomed = sorted(a.class_name.rsplit(":", 1)[-1] for a in alive if a.node_id == self.worker.node_id)
        self.cluster.remove_node(self.worker, allow_graceful=False)
        self.worker = None
        return f"the worker node, with {', '.join(doomed) or 'no actor'}"

    def shutdown(self) -> None:
        self.cluster.shutdown()


def replicas(deployment: str) -> list[str]:
    """The deployment's live replicas (not those waiting for a CPU), in random order."""
    alive = [a.name for a in list_actors(filters=[("state", "=", "ALIVE")], limit=10000)
             if f"{APP}#{deployment}#" in (a.name or "")]
    return random.sample(alive, len(alive))


def kill_replica(deployment: str) -> str:
    name = replicas(deployment)[0]
    ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
    return name


def wedge_runner() -> str:
    """Blocks the model thread of one Inference replica for good, as a forward pass stuck in a
    driver call would; Serve's health check then fails and replaces the replica."""
    def block_the_model_thread(replica) -> None:
        model = replica._replica_impl._user_callable_wrapper._callable
        model._classifier.runner._executor.submit(threading.Event().wait)

    for name in replicas("Inference"):
        try:  # a replica still loading its model answers only once it is done
            ray.get(ray.get_actor(name, namespace="serve").__ray_call__.remote(block_the_model_thread), timeout=10)
            return name
        except ray.exceptions.GetTimeoutError:
            continue
    raise RuntimeError("no Inference replica took the call")


def redeploy(config: dict, cache_size: int, dashboard: str, folder: Path, timeout_s: float) -> bool:
    """`serve deploy` of the config with every Inference deployment's cache size set to
    ``cache_size`` (its ``user_config``); whether, within ``timeout_s``, the replicas of each model
    that answer report the new size (Serve's status may stay "updating" meanwhile: a replica the
    autoscaler asked for and that waits for a CPU is one of the new version too)."""
    (app,) = config["applications"]
    models = [d["name"] for d in app["deployments"] if d["name"].startswith("Inference")]
    for deployment in app["deployments"]:
        if deployment["name"] in models:
            deployment["user_config"] = {"cache_size": cache_size}
    path = folder / "redeploy.yaml"
    path.write_text(yaml.safe_dump(config))
    subprocess.run([str(Path(sys.executable).parent / "serve"), "deploy", "-a", dashboard, str(path)],
                   check=True, capture_output=True, timeout=120)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(2)
        status = serve.status().applications.get(APP)
        if status is not None and status.status == "DEPLOY_FAILED":
            return False
        if all(serve.get_deployment_handle(name, APP).describe.remote().result(timeout_s=10)["cache"]["size"]
               == cache_size for name in models for _ in range(3)):
            return True
    return False


def measure_capacity(url: str, mix: Mix, seconds: float = 15) -> float:
    """Closed-loop throughput of fresh uploads at 8 connections, after 5 s of warm-up."""
    drive(url + "/v1/classify", mix.fresh, 8, seconds=5)
    return drive(url + "/v1/classify", mix.fresh, 8, seconds=seconds).summary()["rps"]


def sent_between(samples: list[Sample], start: float, end: float) -> list[Sample]:
    return [s for s in samples if start <= s.sent_s < end]


def caught_by(samples: list[Sample], start: float, end: float) -> list[Sample]:
    """The requests a fault window caught: sent during it, or sent before it and still waiting for
    their answer when it opened (a request cut by a node's death was sent before the kill)."""
    return [s for s in samples if s.sent_s < end and s.sent_s + s.seconds >= start]


def window_report(inside: list[Sample], start: float, slow_s: float) -> dict:
    """Counts by status of the requests ``inside`` a window that opened at ``start``, the
    unexpected and the hung, and recovery: how long after ``start`` the last unexpected or
    slower-than-``slow_s`` request ended."""
    steady = [s for s in inside if s.kind != "burst"]
    disturbed = [s for s in steady if not s.expected or s.seconds > slow_s]
    return {
        "sent": len(inside),
        "answered": sum(s.status != NO_ANSWER for s in inside),
        "by_status": dict(sorted(collections.Counter(str(s.status) for s in inside).items())),
        "unexpected": sum(not s.expected for s in inside),
        "5xx": sum(s.status >= 500 for s in steady),
        "recovery_s": round(max((s.sent_s + s.seconds for s in disturbed), default=start) - start, 1),
        "p99_ms": round(percentile(sorted(s.seconds * 1000 for s in steady), 99), 1) if steady else None,
    }


def growth_per_hour(rows: list[dict], after_s: float, min_span_s: float) -> dict:
    """Per Serve process alive for at least ``min_span_s`` after ``after_s`` and its own first
    PROCESS_WARMUP_S (loading a model, filling a cache): the least-squares
    slope of its RSS (and open files, threads), per hour, as a share of its mean RSS."""
    first_seen: dict[int, float] = {}
    by_pid: dict[int, list[dict]] = collections.defaultdict(list)
    for row in rows:
        first_seen.setdefault(row["pid"], row["t"])
        if row["t"] >= max(after_s, first_seen[row["pid"]] + PROCESS_WARMUP_S):
            by_pid[row["pid"]].append(row)
    result = {}
    for pid, series in by_pid.items():
        if series[-1]["t"] - series[0]["t"] < max(min_span_s, MIN_GROWTH_SPAN_S):
            continue
        t = [r["t"] for r in series]
        mean_t = sum(t) / len(t)

        def slope(key: str) -> float:
            values = [r[key] for r in series]
            mean_v = sum(values) / len(values)
            return (sum((a - mean_t) * (b - mean_v) for a, b in zip(t, values))
                    / sum((a - mean_t) ** 2 for a in t) * 3600)

        mean_rss = sum(r["rss"] for r in series) / len(series)
        result[f"{series[0]['name']} ({pid})"] = {
            "minutes": round((t[-1] - t[0]) / 60, 1), "mean_rss_mib": round(mean_rss / 2**20, 1),
            "rss_growth_per_hour": round(slope("rss") / mean_rss, 4),
            "fds_per_hour": round(slope("fds"), 1), "threads_per_hour": round(slope("threads"), 1),
        }
    return result


def client_counts(samples: list[Sample]) -> dict:
    """What the client saw, as the service counts it: answers by status (no answer is not
    counted), and cache hits and misses (each v1 answer says which; a v2 image is always fresh)."""
    answered = [s for s in samples if s.status != NO_ANSWER]
    v1 = [s for s in answered if s.cached is not None]
    return {"requests_by_status": dict(collections.Counter(str(s.status) for s in answered)),
            "cache_hits": sum(s.cached for s in v1),
            "cache_misses": sum(not s.cached for s in v1) + sum(s.kind == "v2" and s.status == 200 for s in answered)}


def compare(client: dict, service: dict) -> dict:
    def error(a: float, b: float) -> float:
        return abs(a - b) / max(a, 1)

    statuses = sorted(set(client["requests_by_status"]) | set(service["requests_by_status"]))
    rows = {f"requests {status}": (client["requests_by_status"].get(status, 0), service["requests_by_status"].get(status, 0))
            for status in statuses}
    rows["cache hits"] = (client["cache_hits"], service["cache_hits"])
    rows["cache misses"] = (client["cache_misses"], service["cache_misses"])
    return {name: {"client": c, "service": s, "error": round(error(c, s), 5)} for name, (c, s) in rows.items()}


def draw(path: Path, samples: list[Sample], rows: list[dict], faults: list[Fault]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = max(s.sent_s for s in samples)
    seconds = range(int(end) + 1)
    ok, bad = collections.Counter(), collections.Counter()
    for s in samples:
        (ok if s.expected else bad)[int(s.sent_s)] += 1
    fig, (rate, errors, memory) = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    minutes = [t / 60 for t in seconds]
    smooth = 10

    def per_second(counter) -> list[float]:
        return [sum(counter[t - i] for i in range(smooth)) / smooth for t in seconds]

    rate.plot(minutes, per_second(ok), color="tab:green", lw=0.8)
    rate.set_ylabel("answered as\nexpected /s")
    errors.plot(minutes, per_second(bad), color="tab:red", lw=0.8)
    errors.set_ylabel("unexpected /s")
    by_name: dict[str, dict[float, float]] = collections.defaultdict(lambda: collections.defaultdict(float))
    for row in rows:
        by_name[row["name"]][row["t"]] += row["rss"] / 2**20
    for name, series in sorted(by_name.items()):
        times = sorted(series)
        memory.plot([t / 60 for t in times], [series[t] for t in times], lw=0.8, label=name)
    memory.set_ylabel("RSS MiB\n(all processes)")
    memory.set_xlabel("minutes")
    memory.legend(fontsize=7, ncol=4)
    colours = dict(zip((*FAULTS, NODE_JOIN),
                       ("tab:purple", "tab:orange", "tab:brown", "tab:gray", "tab:blue", "tab:olive", "tab:cyan")))
    for axis in (rate, errors, memory):
        axis.grid(alpha=0.3)
        for fault in faults:
            axis.axvspan(fault.at_s / 60, (fault.at_s + fault.window_s) / 60, color=colours[fault.name], alpha=0.15)
    for fault in faults:
        rate.annotate(fault.name, (fault.at_s / 60, rate.get_ylim()[1]), fontsize=6, rotation=90, va="top")
    fig.suptitle("Soak: steady mixed load with faults (shaded: fault windows)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10, help="of steady load, capacity measurement apart")
    parser.add_argument("--nodes", type=int, choices=(1, 2), default=1, help="Ray nodes on this machine")
    parser.add_argument("--rps", type=float, help="the steady rate; default 70%% of the measured capacity")
    parser.add_argument("--warmup", type=float, default=60, help="seconds before the first fault")
    parser.add_argument("--fault-every", type=float, default=150, help="seconds between faults")
    parser.add_argument("--window", type=float, default=90,
                        help="seconds after a fault that count as its window (5xx are allowed there)")
    parser.add_argument("--faults", help=f"in turn; any of {','.join(FAULTS)} (default: all that the nodes allow)")
    parser.add_argument("--burst", type=int, default=1500, help="simultaneous uploads (160x120 JPEGs) of a burst")
    parser.add_argument("--slow", type=float, default=2.0, help="seconds past which a request counts as disturbed")
    parser.add_argument("--config", type=Path, default=Path("serve_config.yaml"))
    parser.add_argument("--num-cpus", type=int, help="logical CPUs of each Ray node (default: the machine's)")
    parser.add_argument("--out", type=Path, default=Path("soak-report"))
    args = parser.parse_args(argv)
    if args.faults is None:
        args.faults = ",".join(FAULTS if args.nodes == 2 else ONE_NODE_FAULTS)
    args.faults = args.faults.split(",") if args.faults else []
    if unknown := set(args.faults) - set(FAULTS):
        parser.error(f"unknown faults {sorted(unknown)}")
    if "kill-node" in args.faults and args.nodes != 2:
        parser.error("kill-node needs --nodes 2: a worker node to kill")
    if not 1 <= args.minutes <= 120:
        parser.error("--minutes must be between 1 and 120")
    if args.window > args.fault_every:
        parser.error("--window must not be longer than --fault-every")
    return args


def stop_on_signals() -> None:
    """Ctrl-C, `kill -INT` and `kill -TERM` end the soak through its clean-up (Serve, then the
    cluster), also when it was started in the background, where SIGINT starts out ignored."""
    def stop(signum: int, frame) -> None:
        for each in (signal.SIGINT, signal.SIGTERM):  # a second signal must not cut the clean-up short
            signal.signal(each, signal.SIG_IGN)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_signals()
    args.out.mkdir(parents=True, exist_ok=True)
    config = serve_config(args.config)
    url = require_loopback(base_url(config))
    request_timeout_s = config["http_options"]["request_timeout_s"]
    folder = Path(tempfile.mkdtemp(prefix="soak-", dir="/tmp"))  # short: Ray's socket paths
    nodes = None
    try:
        nodes = Nodes(folder, args.num_cpus, worker=args.nodes == 2)
        ray.init(address=nodes.gcs_address, namespace="serve", log_to_driver=False)
        nodes.configure(config)
        with running_service(config, args.config.resolve().parent, address=nodes.gcs_address):
            return soak(args, config, url, request_timeout_s, nodes, folder)
    finally:
        ray.shutdown()
        if nodes is not None:
            nodes.shutdown()
        shutil.rmtree(folder, ignore_errors=True)


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def injected(faults: list[Fault]) -> list[Fault]:
    """The faults of the schedule, without the node joins reported beside them."""
    return [f for f in faults if f.name != NODE_JOIN]


def progress(began: float, text: str) -> None:
    print(f"[{(time.monotonic() - began) / 60:5.1f} min] {text}", flush=True)


def inject(name: str, faults: list[Fault], load: Load, args, config: dict, nodes: Nodes, folder: Path,
           began: float) -> Fault:
    fault = Fault(name, time.monotonic() - began, utc_now(), args.window)
    try:
        act(fault, faults, load, args, config, nodes, folder)
    except Exception as exc:  # noqa: BLE001 - a fault that could not be injected is reported, and the soak goes on
        fault.detail = f"not injected: {exc!r}"[:300]
    fault.done_s = round(time.monotonic() - began - fault.at_s, 1)
    return fault


def act(fault: Fault, faults: list[Fault], load: Load, args, config: dict, nodes: Nodes, folder: Path) -> None:
    name = fault.name
    if name == "kill-inference":
        fault.detail = "killed " + kill_replica("Inference")
    elif name == "kill-preprocessing":
        fault.detail = "killed " + kill_replica("Preprocessing")
    elif name == "wedge-runner":
        fault.detail = "wedged " + wedge_runner()
    elif name == "kill-node":
        fault.detail = "killed " + nodes.kill_worker()
    elif name == "burst":
        load.burst(args.burst)
        fault.detail = f"{args.burst} uploads at once"
    else:
        size = CACHE_SIZES[sum(f.name == "redeploy" for f in faults) % len(CACHE_SIZES)]
        running = redeploy(config, size, nodes.dashboard, folder, args.window)
        fault.detail = f"cache_size {size}" + ("" if running else f", not applied after {args.window:g} s")


def soak(args, config: dict, url: str, request_timeout_s: float, nodes: Nodes, folder: Path) -> int:
    began = time.monotonic()
    rps = args.rps or 0.7 * measure_capacity(url, Mix.make())
    progress(began, f"steady load at {rps:.1f} requests/s for {args.minutes:g} min; faults: {', '.join(args.faults) or 'none'}")
    sampler, scraper = ProcessSampler(began), CounterScraper(nodes.metrics_urls)
    scraper.settle()  # the capacity measurement's requests are counted before the soak's
    counted_before = scraper.totals()
    sampler.start()
    scraper.start()
    load = Load(url, rps, request_timeout_s + 15, began)
    load_began = time.monotonic() - began
    steady = load.steady(args.minutes * 60)
    end = load_began + args.minutes * 60
    faults: list[Fault] = []
    schedule = [load_began + args.warmup + i * args.fault_every
                for i in range(int((args.minutes * 60 - args.warmup - args.window) // args.fault_every) + 1)]
    schedule = [t for t in schedule if args.faults and t + args.window <= end]
    reported = time.monotonic() - began
    while not steady.done():
        time.sleep(1)
        now = time.monotonic() - began
        if schedule and now >= schedule[0]:
            schedule.pop(0)
            fault = inject(args.faults[len(injected(faults)) % len(args.faults)], faults, load, args, config,
                           nodes, folder, began)
            faults.append(fault)
            progress(began, f"{fault.name}: {fault.detail} (done in {fault.done_s} s)")
        if args.nodes == 2 and nodes.worker is None and now >= faults[-1].at_s + args.window:
            # Its window lasts until the next fault begins, --window at most: on one machine, the fresh
            # node's start-up (Serve starts the replicas that wait for it) takes CPU from the
            # running node, where a real node brings its own.
            join = Fault(NODE_JOIN, now, utc_now(), min(args.window, (schedule[0] if schedule else end) - now),
                         "a fresh worker node")
            nodes.add_worker()
            join.done_s = round(time.monotonic() - began - now, 1)
            faults.append(join)
            progress(began, f"a fresh worker node joined (in {join.done_s} s)")
        if now - reported >= 30:
            recent = window_report(sent_between(load.samples, reported - 30, reported), reported - 30, args.slow)
            progress(began, f"the 30 s before the last: {recent['sent']} requests, by status {recent['by_status']}")
            reported = now
    steady.result()
    time.sleep(5)  # a burst's last answers
    load.close()
    for thread in (sampler, scraper):
        thread.stopping.set()
        thread.join()
    # What the report is built from, kept in case building it fails.
    (args.out / "raw.json").write_text(json.dumps({"samples": [asdict(s) for s in load.samples], "processes": sampler.rows,
                                                   "faults": [asdict(f) for f in faults]}))
    progress(began, "load done; waiting for the service's counters to settle")
    scraper.settle()
    report = build_report(args, rps, load.samples, sampler.rows, faults, counted_before, scraper.totals(),
                          load_began, end, request_timeout_s)
    (args.out / "soak.json").write_text(json.dumps(report, indent=1))
    draw(args.out / "soak.png", load.samples, sampler.rows, faults)
    summary = summary_text(report)
    (args.out / "summary.txt").write_text(summary)
    print(summary, flush=True)
    return 0 if all(report["targets"].values()) else 1


def subtract(after: dict, before: dict) -> dict:
    return {key: ({k: v - before[key].get(k, 0) for k, v in value.items()} if isinstance(value, dict)
                  else value - before[key]) for key, value in after.items()}


def build_report(args, rps: float, samples: list[Sample], rows: list[dict], faults: list[Fault],
                 counted_before: dict, counted_after: dict, load_began: float, end: float,
                 request_timeout_s: float) -> dict:
    caught_by_fault = [caught_by(samples, f.at_s, f.at_s + f.window_s) for f in faults]
    caught = {id(s) for inside in caught_by_fault for s in inside}
    outside = [s for s in samples if id(s) not in caught]
    overall = window_report(sent_between(samples, load_began, end + 60), load_began, args.slow)
    hung = sum(s.status == NO_ANSWER and s.seconds >= request_timeout_s for s in samples)
    overall["hung"] = hung
    overall["expected_ratio"] = round(1 - overall["unexpected"] / max(overall["sent"], 1), 5)
    overall["5xx_outside_fault_windows"] = sum(s.status >= 500 or s.status == NO_ANSWER for s in outside)
    fault_reports = [{**asdict(f), **window_report(inside, f.at_s, args.slow)} for f, inside in zip(faults, caught_by_fault)]
    # Growth is judged after the first round of faults: a burst sets each allocator's high-water
    # mark once, and a process that then keeps growing through the next rounds leaks. The growth
    # over the whole run after the load's warm-up is reported beside it.
    scheduled = injected(faults)
    first_round_over = (scheduled[min(len(scheduled), len(set(args.faults))) - 1].at_s + args.window if scheduled
                        else load_began + args.warmup)
    growth = growth_per_hour(rows, first_round_over, min_span_s=min(600, (end - first_round_over) / 2))
    warmed_up = load_began + args.warmup
    growth_whole_run = growth_per_hour(rows, warmed_up, min_span_s=min(600, (end - warmed_up) / 2))
    counted = subtract(counted_after, counted_before)
    client = client_counts(samples)
    counters = compare(client, counted)
    # Serve's HTTP counter, which the dashboard's and alerts' request rates read: reported, not a target.
    serve_counters = {name: row for name, row in compare(
        client, {**counted, "requests_by_status": counted["serve_requests_by_status"]}).items()
        if name.startswith("requests")}
    targets = {
        "expected >= 99.5%": overall["expected_ratio"] >= TARGET_EXPECTED_RATIO,
        "no hung request": hung == 0,
        "no 5xx outside fault windows": overall["5xx_outside_fault_windows"] == 0,
        "every recovery as promised": all(f["recovery_s"] <= RECOVERY_PROMISE_S[f["name"]] for f in fault_reports),
        "RSS growth < 5%/h after the first round": all(g["rss_growth_per_hour"] < TARGET_RSS_GROWTH_PER_HOUR
                                                       for g in growth.values()),
        "counters within 0.1%": all(c["error"] <= TARGET_COUNTER_ERROR for c in counters.values()),
    }
    return {"parameters": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "max_dgram_qlen": max_dgram_qlen(),
            "rps": round(rps, 2), "utc_end": utc_now(),
            "overall": overall,
            "by_kind": {kind: window_report([s for s in samples if s.kind == kind], load_began, args.slow)
                        for kind in sorted({s.kind for s in samples})},
            "faults": fault_reports, "growth_from_s": round(first_round_over), "growth_after_first_round": growth,
            "growth_whole_run": growth_whole_run, "counters": counters,
            "serve_http_counter": serve_counters,
            "service_counters": counted, "targets": targets,
            "unexpected_answers": dict(collections.Counter(f"{s.kind} {s.status} {s.code}" for s in samples
                                                           if not s.expected).most_common()),
            # every error answer by who wrote it (the service's JSON code, or another body's start)
            "error_answers": dict(collections.Counter(f"{s.status} {s.code}" for s in samples
                                                      if s.status != 200).most_common()),
            # every Serve process's readings, every 30 s (the growth above uses them all)
            "processes": [row for row in rows if row["t"] % 30 < SAMPLE_EVERY_S]}


def max_dgram_qlen() -> int | None:
    """This machine's net.unix.max_dgram_qlen: HAProxy sends Serve one log line per request over a
    Unix datagram socket, which holds this many lines; past that, HAProxy drops them, and Serve's HTTP
    counter misses those requests (10, the kernel's default in a new network namespace, loses
    some of a burst's; docs/observability.md)."""
    with contextlib.suppress(OSError, ValueError):
        return int(Path("/proc/sys/net/unix/max_dgram_qlen").read_text())
    return None


def summary_text(report: dict) -> str:
    o = report["overall"]
    nodes = report["parameters"]["nodes"]
    lines = [f"soak: {report['parameters']['minutes']:g} min at {report['rps']} requests/s on {nodes} node"
             f"{'s' if nodes > 1 else ''}, ended {report['utc_end']}",
             f"overall: {o['sent']} sent, {o['answered']} answered, by status {o['by_status']}; "
             f"{o['expected_ratio']:.3%} as expected, {o['hung']} hung, {o['5xx_outside_fault_windows']} 5xx outside fault windows",
             f"{'fault':<19}{'at min':>7}{'sent':>6}{'unexpected':>11}{'5xx':>5}{'recovery s':>11}{'promised':>9}  statuses"]
    lines += [f"{f['name']:<19}{f['at_s'] / 60:>7.1f}{f['sent']:>6}{f['unexpected']:>11}{f['5xx']:>5}"
              f"{f['recovery_s']:>11.1f}{RECOVERY_PROMISE_S[f['name']]:>9}  {f['by_status']}" for f in report["faults"]]
    for key, when in (("growth_after_first_round", f"after the first round of faults ({report['growth_from_s']} s)"),
                      ("growth_whole_run", "over the whole run")):
        growth = report[key]
        if growth:
            worst = max(growth, key=lambda k: growth[k]["rss_growth_per_hour"])
            lines.append(f"RSS growth {when}: {len(growth)} Serve processes, largest {worst} "
                         f"{growth[worst]['rss_growth_per_hour']:+.1%}/h; fds/h up to "
                         f"{max(g['fds_per_hour'] for g in growth.values()):+.0f}, threads/h up to "
                         f"{max(g['threads_per_hour'] for g in growth.values()):+.0f}")
    lines.append("counters (client vs service): " + "; ".join(
        f"{name} {c['client']:g}/{c['service']:g}" for name, c in report["counters"].items()))
    if any(report["service_counters"]["fallback_proxy_requests_by_status"].values()):
        lines.append("of the service's counts, by Serve's fallback proxy: "
                     f"{report['service_counters']['fallback_proxy_requests_by_status']}")
    lines.append("Serve's HTTP counter (not a target): " + "; ".join(
        f"{name} {c['client']:g}/{c['service']:g}" for name, c in report["serve_http_counter"].items())
        + f" (net.unix.max_dgram_qlen {report['max_dgram_qlen']})")
    lines.append("targets: " + ", ".join(f"{name} {'met' if ok else 'MISSED'}" for name, ok in report["targets"].items()))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
