"""API keys and per-key rate limits over real HTTP, against the keyed copy of the app."""

from __future__ import annotations

import time

import pytest
import ray
import requests

from serve_app.keys import new_key
from serve_app.routes import ROUTES
from tests.images import photo_bytes, unique_photo_bytes
from tests.integration.conftest import SECURED_PREFIX
from tests.integration.metrics import scrape, total, wait_for

pytestmark = pytest.mark.integration
APP = "image-classifier-secured"
MODEL_PATHS = {"{model}": "efficientnet-lite0", "{version}": "1"}


def classify(service, authorization: str | None = None) -> requests.Response:
    headers = {"Authorization": authorization} if authorization is not None else {}
    return requests.post(service.url(SECURED_PREFIX + "/v1/classify"), data=unique_photo_bytes("JPEG", (96, 72)),
                         headers=headers, timeout=60)


def concrete(path: str) -> str:
    for parameter, value in MODEL_PATHS.items():
        path = path.replace(parameter, value)
    return path


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-key", "Bearer", "Basic dXNlcjpwYXNz", "bearer"],
                         ids=["none", "wrong-key", "no-key", "basic", "scheme-only"])
def test_no_valid_key_is_401_with_the_json_body(service, authorization):
    response = classify(service, authorization)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthorized"


def test_every_route_needs_the_key_but_the_open_ones(service):
    for route in ROUTES:
        response = requests.request(route.method, service.url(SECURED_PREFIX + concrete(route.path)), data=b"{}",
                                    timeout=60)
        assert response.status_code == (200 if route.open else 401), route
    v2 = requests.post(service.url(SECURED_PREFIX + "/v2/models/efficientnet-lite0/infer"), data=b"{}", timeout=60)
    assert v2.json() == {"error": "send an API key as 'Authorization: Bearer <key>'"}


def _secured_ingress_replicas() -> set[str]:
    return {actor["name"] for actor in ray.util.list_named_actors(all_namespaces=True)
            if f"{APP}#Ingress#" in actor["name"]}


def restart_the_ingress(service) -> None:
    """What a key change asks of an operator: the ingress replicas start again and read the key
    file. Serve replaces the killed replica."""
    (old,) = _secured_ingress_replicas()
    ray.kill(ray.get_actor(old, namespace="serve"), no_restart=True)

    def replaced() -> bool:
        replicas = _secured_ingress_replicas()
        if not replicas or old in replicas:
            return False
        return requests.get(service.url(SECURED_PREFIX + "/healthz"), timeout=10).status_code == 200

    assert wait_for(replaced, timeout_s=120), "the ingress replica was not replaced"


def test_a_key_is_rotated_with_both_keys_working_in_between(service):
    old = f"Bearer {service.api_keys['rotated-out']}"
    assert classify(service, old).status_code == 200
    new = f"Bearer {new_key('rotated-in', service.api_keys_file)}"
    assert classify(service, new).status_code == 401, "the key file is read at start-up"

    restart_the_ingress(service)
    assert [classify(service, key).status_code for key in (old, new)] == [200, 200]

    lines = service.api_keys_file.read_text().splitlines(keepends=True)
    service.api_keys_file.write_text("".join(line for line in lines if not line.startswith("rotated-out:")))
    restart_the_ingress(service)
    assert [classify(service, key).status_code for key in (old, new)] == [401, 200]


def test_past_the_burst_a_key_gets_429_then_passes_again_after_retry_after(service):
    """The bucket starts full (burst 2) and refills at 0.5/s: the two first requests pass however
    long they take, and /v1/model, answered by the ingress alone, takes far less than the 2 s a
    token takes to come back, so a 429 follows within a few requests."""
    authorization = {"Authorization": f"Bearer {service.api_keys['limited']}"}
    url = service.url(SECURED_PREFIX + "/v1/model")
    answers: list[requests.Response] = []
    while len(answers) < 10 and not (answers and answers[-1].status_code == 429):
        answers.append(requests.get(url, headers=authorization, timeout=60))
    statuses = [answer.status_code for answer in answers]
    assert statuses[:2] == [200, 200] and set(statuses[:-1]) == {200} and statuses[-1] == 429, statuses
    refused = answers[-1]
    assert refused.json()["error"]["code"] == "rate_limited"
    assert refused.json()["error"]["request_id"] == refused.headers["X-Request-ID"]
    retry_after = int(refused.headers["Retry-After"])
    assert retry_after >= 1
    time.sleep(retry_after)
    assert requests.get(url, headers=authorization, timeout=60).status_code == 200


def test_keys_never_reach_responses_or_logs_but_their_ids_are_counted(service):
    key = service.api_keys["steady"]
    for authorization in (f"Bearer {key}", f"Bearer {key}x"):
        response = classify(service, authorization)
        assert key not in response.text and key not in str(response.headers)
    logs = [p for p in service.ray_logs.rglob("*") if p.is_file()]
    assert logs and not [p for p in logs if key.encode() in p.read_bytes()]
    assert any(b"key steady" in p.read_bytes() for p in logs), "the key_id is in the ingress's log"

    def counted():
        samples = scrape(service)
        return (total(samples, "ray_image_requests_total", application=APP, key_id="steady", status="200") >= 1
                and total(samples, "ray_image_rejections_total", application=APP, status="401") >= 1)

    assert wait_for(counted), "per-key requests and 401 rejections in the metrics scrape"


def test_open_service_serves_without_a_key(service):
    assert requests.post(service.url("/v1/classify"), data=photo_bytes("JPEG", (64, 48)), timeout=60).ok
