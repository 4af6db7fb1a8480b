"""API keys and per-key rate limits over real HTTP, against the keyed copy of the app."""

from __future__ import annotations

import time

import pytest
import requests

from tests.images import photo_bytes, unique_photo_bytes
from tests.integration.conftest import SECURED_PREFIX
from tests.integration.metrics import scrape, total, wait_for

pytestmark = pytest.mark.integration
APP = "image-classifier-secured"


def classify(service, authorization: str | None = None) -> requests.Response:
    headers = {"Authorization": authorization} if authorization is not None else {}
    return requests.post(service.url(SECURED_PREFIX + "/v1/classify"), data=unique_photo_bytes("JPEG", (96, 72)),
                         headers=headers, timeout=60)


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-key", "Bearer", "Basic dXNlcjpwYXNz", "bearer"],
                         ids=["none", "wrong-key", "no-key", "basic", "scheme-only"])
def test_no_valid_key_is_401_with_the_json_body(service, authorization):
    response = classify(service, authorization)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json()["error"]["code"] == "unauthorized"


def test_every_route_but_health_needs_the_key(front_door):
    for path in ("/v1/model", "/openapi.json", "/docs", "/", "/v2", "/v2/models/efficientnet-lite0"):
        assert requests.get(front_door(SECURED_PREFIX + path), timeout=60).status_code == 401, path
    for path in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"):
        assert requests.get(front_door(SECURED_PREFIX + path), timeout=60).status_code == 200, path
    v2 = requests.post(front_door(SECURED_PREFIX + "/v2/models/efficientnet-lite0/infer"), data=b"{}", timeout=60)
    assert v2.status_code == 401 and v2.json() == {"error": "send an API key as 'Authorization: Bearer <key>'"}


def test_both_keys_work_during_a_rotation(service):
    for key_id in ("rotated-out", "rotated-in"):
        response = classify(service, f"Bearer {service.api_keys[key_id]}")
        assert response.status_code == 200, response.text


def test_past_the_burst_a_key_gets_429_then_passes_again_after_retry_after(service):
    authorization = f"Bearer {service.api_keys['limited']}"
    answers = [classify(service, authorization) for _ in range(3)]
    assert [a.status_code for a in answers[:2]] == [200, 200]
    refused = answers[2]
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    retry_after = int(refused.headers["Retry-After"])
    assert retry_after >= 1
    time.sleep(retry_after)
    assert classify(service, authorization).status_code == 200


def test_keys_never_reach_responses_or_logs_but_their_ids_are_counted(service):
    key = service.api_keys["rotated-in"]
    for authorization in (f"Bearer {key}", f"Bearer {key}x"):
        response = classify(service, authorization)
        assert key not in response.text and key not in str(response.headers)
    logs = [p for p in service.ray_logs.rglob("*") if p.is_file()]
    assert logs and not [p for p in logs if key.encode() in p.read_bytes()]
    assert any(b"key rotated-in" in p.read_bytes() for p in logs), "the key_id is in the ingress's log"

    def counted():
        samples = scrape(service)
        return (total(samples, "ray_image_requests_total", application=APP, key_id="rotated-in", status="200") >= 1
                and total(samples, "ray_image_rejections_total", application=APP, status="401") >= 1)

    assert wait_for(counted), "per-key requests and 401 rejections in the metrics scrape"


def test_open_service_serves_without_a_key(service):
    assert requests.post(service.url("/v1/classify"), data=photo_bytes("JPEG", (64, 48)), timeout=60).ok
