"""The shipped model repository, served by one graph: Lite0 (the default), Lite1 and Lite2, each in
its own Inference deployment with its own replicas and cache (the app at MODELS_PREFIX)."""

from __future__ import annotations

import json
import uuid
from urllib.parse import urlparse

import numpy as np
import pytest
import requests
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from deployments.inference.runtimes import TorchRuntime
from deployments.inference.spec import ModelSource, model_spec
from deployments.preprocessing import ImageDecoder
from deployments.validation import ImageValidator
from tests.images import distinct_photos, shipped_photos
from tests.integration.conftest import MODELS_PREFIX, TWO_REPLICA_MODEL
from tests.integration.metrics import scrape, total, wait_for

pytestmark = pytest.mark.integration

MODELS = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")  # the default first
APP = "image-classifier-models"


def url(service, path: str) -> str:
    return service.url(MODELS_PREFIX + path)


def classify(service, data: bytes, model: str | None = None) -> requests.Response:
    query = f"?model={model}" if model else ""
    return requests.post(url(service, "/v1/classify" + query), data=data, timeout=60)


def test_tritonclient_lists_the_repository_and_each_model_is_ready(service):
    client = triton.InferenceServerClient(urlparse(service.base_url).netloc + MODELS_PREFIX)
    index = client.get_model_repository_index()
    assert [(m["name"], m["state"]) for m in index] == [(name, "READY") for name in MODELS]
    for name in MODELS:
        assert client.is_model_ready(name)
        assert client.get_model_metadata(name)["name"] == name
    with pytest.raises(InferenceServerException, match="not supported"):
        client.load_model("efficientnet-lite1")


def test_v1_models_describes_each_model_with_its_own_input_size(service):
    models = requests.get(url(service, "/v1/models"), timeout=30).json()["models"]
    assert [(m["name"], m["input_size"], m["default"]) for m in models] == [
        ("efficientnet-lite0", [224, 224], True), ("efficientnet-lite1", [240, 240], False),
        ("efficientnet-lite2", [260, 260], False),
    ]


@pytest.mark.parametrize("model", MODELS)
def test_each_model_answers_with_parity_against_its_own_torch_model(service, model):
    """Top-5 classes the same, and probabilities within 1e-3, as the runtime parity unit test asks."""
    spec = model_spec(ModelSource(model), model)
    eager = TorchRuntime(spec, "cpu", num_threads=1)
    decoder = ImageDecoder(spec.geometry, max_pixels=40_000_000, max_side=16384)
    for name, data in shipped_photos().items():
        response = classify(service, data, model)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"]["name"] == model
        pixels = decoder.decode(data, ImageValidator.validate_magic_bytes(data)[1]).pixels
        expected = eager.forward(pixels[np.newaxis])[0]
        served = {p["class_id"]: p["score"] for p in body["predictions"]}
        assert list(served) == list(np.argsort(-expected)[:5]), name
        assert max(abs(score - expected[class_id]) for class_id, score in served.items()) <= 1e-3, name


def test_a_request_naming_no_model_gets_the_default_one(service):
    (data, *_) = distinct_photos(1, size=(200, 150), salt=b"default-model")
    unnamed, named = classify(service, data).json(), classify(service, data, MODELS[0]).json()
    assert unnamed["model"] == named["model"] and unnamed["model"]["name"] == MODELS[0]
    assert unnamed["predictions"] == named["predictions"]
    assert (unnamed["cached"], named["cached"]) == (False, True), "one model, one cache"


def test_every_stage_names_the_model_on_its_log_line_for_the_request(service):
    request_id = f"models-{uuid.uuid4().hex}"
    (data,) = distinct_photos(1, size=(96, 72), salt=b"models-log")
    response = requests.post(url(service, "/v1/classify?model=efficientnet-lite2"), data=data, timeout=60,
                             headers={"X-Request-ID": request_id})
    assert response.status_code == 200, response.text

    def messages_by_deployment() -> dict[str, list[str]] | None:
        found: dict[str, list[str]] = {}
        for path in (service.ray_logs / "serve").glob(f"replica_{APP}_*.log"):
            for line in path.read_text(errors="replace").splitlines():
                if request_id in line and "request " in line:
                    record = json.loads(line)
                    found.setdefault(record["deployment"].removeprefix(f"{APP}_"), []).append(record["message"])
        return found if {"Validation", "Preprocessing", "Inference-efficientnet-lite2"} <= set(found) else None

    found = wait_for(messages_by_deployment, timeout_s=30)
    assert found, "no stage logged the request"
    stage_lines = [m for deployment, messages in found.items() if deployment != "Ingress" for m in messages]
    assert stage_lines and all("model efficientnet-lite2" in m for m in stage_lines), found


def test_an_unknown_model_is_a_json_404_in_both_apis(service):
    v1 = classify(service, distinct_photos(1, size=(64, 48), salt=b"unknown")[0], "no-such-model")
    assert v1.status_code == 404 and v1.json()["error"]["code"] == "not_found", v1.text
    assert "efficientnet-lite2" in v1.json()["error"]["message"], "the message names the served models"
    for path in ("/v2/models/no-such-model", "/v2/models/no-such-model/ready"):
        v2 = requests.get(url(service, path), timeout=30)
        assert v2.status_code == 404 and "no-such-model" in v2.json()["error"], v2.text


def test_repeats_hit_the_cache_of_their_model_across_its_two_replicas_and_miss_another_models(service):
    photos = distinct_photos(20, size=(160, 120), salt=b"models-affinity")
    assert all(classify(service, data, TWO_REPLICA_MODEL).json()["cached"] is False for data in photos)
    repeats = [classify(service, data, TWO_REPLICA_MODEL).json()["cached"] for data in photos]
    assert sum(repeats) >= 0.9 * len(photos), repeats
    other = [classify(service, data, "efficientnet-lite2").json()["cached"] for data in photos]
    assert not any(other), "another model's cache holds none of them"


def test_prometheus_shows_each_models_requests_hits_misses_and_latency_apart(service):
    photos = distinct_photos(2, size=(96, 72), salt=b"models-metrics")
    for model in MODELS:
        for data in (*photos, photos[0]):  # two misses, then a hit
            assert classify(service, data, model).status_code == 200

    def per_model():
        samples = scrape(service)
        counts = {model: (total(samples, "ray_image_cache_hits_total", application=APP, model=model),
                          total(samples, "ray_image_cache_misses_total", application=APP, model=model),
                          total(samples, "ray_image_stage_latency_ms_count", application=APP, model=model,
                                stage="inference"),
                          total(samples, "ray_image_stage_latency_ms_count", application=APP, model=model,
                                stage="end_to_end"),
                          total(samples, "ray_image_requests_total", application=APP, model=model, status="200"))
                  for model in MODELS}
        return counts if all(h >= 1 and m >= 2 and n >= 2 and e >= 3 and r >= 3
                             for h, m, n, e, r in counts.values()) else None

    assert wait_for(per_model), scrape(service)
