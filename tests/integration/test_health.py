"""Health checks that can fail: a model replica whose runner thread is wedged is replaced by Serve,
while requests go on being answered by the other replica."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import ray
import requests
from ray import serve

from common.settings import get_settings
from deployments.inference.deployment import Inference
from deployments.inference.spec import input_geometry
from deployments.preprocessing import Preprocessing
from deployments.validation import Validation
from serve_app.ingress import Ingress
from tests.images import distinct_photos

pytestmark = pytest.mark.integration
APP, PREFIX = "wedge", "/wedge"
REPLACEMENT_TIMEOUT_S = 90


def _inference_replicas() -> set[str]:
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)]
    return {name.rsplit("#", 1)[1] for name in names if f"{APP}#Inference#" in name}


@pytest.fixture
def wedgeable_app(service):
    # Defined here, so Ray ships the class by value: replicas cannot import the tests package.
    class WedgeableInference(Inference.func_or_class):
        """The real Inference deployment, plus a way to block its one model thread for good, as a
        forward pass stuck in a driver call would."""

        def wedge(self) -> str:
            self._classifier.runner._executor.submit(threading.Event().wait)
            return serve.get_replica_context().replica_id.unique_id

    free = {"ray_actor_options": {"num_cpus": 0}}
    inference = serve.deployment(WedgeableInference).options(
        name="Inference", num_replicas=2, max_ongoing_requests=2, health_check_period_s=1,
        health_check_timeout_s=2, graceful_shutdown_timeout_s=1, **free,
    )
    app = Ingress.options(**free).bind(
        Validation.options(**free).bind(), Preprocessing.options(**free).bind(input_geometry(get_settings())), inference.bind()
    )
    serve.run(app, name=APP, route_prefix=PREFIX)
    yield service.url(PREFIX)
    serve.delete(APP)


def test_wedged_runner_gets_its_replica_replaced_while_requests_are_answered(wedgeable_app):
    before = _inference_replicas()
    assert len(before) == 2
    wedged = serve.get_deployment_handle("Inference", APP).wedge.remote().result()
    images = iter(distinct_photos(2000, size=(96, 72), salt=b"wedge"))
    lock, stop = threading.Lock(), threading.Event()
    statuses: list[int | None] = []

    def client() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                with lock:
                    data = next(images)
                try:
                    status = session.post(wedgeable_app + "/v1/classify", data=data, timeout=30).status_code
                except requests.RequestException:
                    status = None
                statuses.append(status)

    deadline = time.monotonic() + REPLACEMENT_TIMEOUT_S
    with ThreadPoolExecutor(2) as pool:
        for _ in range(2):
            pool.submit(client)
        while time.monotonic() < deadline:
            replicas = _inference_replicas()
            if wedged not in replicas and len(replicas) == 2:
                break
            time.sleep(1)
        time.sleep(3)  # and traffic flows to the replacement
        stop.set()
    replaced_in = REPLACEMENT_TIMEOUT_S - (deadline - time.monotonic())
    assert wedged not in _inference_replicas(), f"wedged replica still running after {REPLACEMENT_TIMEOUT_S} s"
    assert statuses and None not in statuses, "every request gets an answer"
    assert statuses.count(200) >= 0.9 * len(statuses), statuses
    assert set(statuses) <= {200, 503}, statuses
    print(f"\nwedged replica replaced in about {replaced_in:.0f} s; {len(statuses)} requests, "
          f"{statuses.count(200)} answered 200, {statuses.count(503)} 503")
