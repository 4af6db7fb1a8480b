"""The Open Inference Protocol (v2), proven with the clients teams already have: Triton's
`tritonclient` and the KServe SDK, unchanged, against the real graph."""

from __future__ import annotations

import asyncio
import base64
import json
from urllib.parse import urlparse

import numpy as np
import pytest
import requests
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from tests.images import PHOTO_PLAUSIBLE_LABELS, photo_bytes, shipped_photos

pytestmark = pytest.mark.integration
MODEL = "efficientnet-lite0"


@pytest.fixture(scope="module")
def client(service) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(urlparse(service.base_url).netloc)


def images_input(images: list[bytes], shape: list[int], binary: bool = True) -> triton.InferInput:
    """Raw bytes as binary tensor data, or base64 strings in the JSON (JSON cannot carry bytes)."""
    elements = images if binary else [base64.b64encode(image).decode() for image in images]
    tensor = triton.InferInput("image", shape, "BYTES")
    tensor.set_data_from_numpy(np.array(elements, dtype=np.object_).reshape(shape), binary_data=binary)
    return tensor


def test_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1")
    assert not client.is_model_ready("resnet50") and not client.is_model_ready(MODEL, "2")
    server = client.get_server_metadata()
    assert server["extensions"] == ["binary_tensor_data", "classification"] and server["name"]
    model = client.get_model_metadata(MODEL)
    assert model["versions"] == ["1"] and model["platform"] == "openvino"
    assert model["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1, 1]}]
    assert model["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 1000]}]


@pytest.fixture(scope="module")
def two_photos(client) -> tuple[list[bytes], np.ndarray]:
    """A cat and a person, each with the probabilities it gets alone."""
    images = [shipped_photos()["chelsea.png"], photo_bytes("JPEG")]
    alone = [client.infer(MODEL, [images_input([image], [1])]).as_numpy("probabilities")[0] for image in images]
    assert alone[0].argmax() != alone[1].argmax(), "the photos must differ for the test to prove anything"
    return images, np.stack(alone)


@pytest.mark.parametrize("binary_input", [True, False], ids=["binary-input", "base64-input"])
@pytest.mark.parametrize("shape", [[2], [2, 1]])
@pytest.mark.parametrize("binary_output", [None, True, False], ids=["default-output", "binary-output", "json-output"])
def test_infer_gives_each_image_its_probabilities(client, two_photos, binary_input, shape, binary_output):
    images, alone = two_photos
    outputs = None if binary_output is None else [triton.InferRequestedOutput("probabilities", binary_output)]
    result = client.infer(MODEL, [images_input(images, shape, binary_input)], outputs=outputs, request_id="r-7")
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (2, 1000) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, alone, atol=1e-4)  # each row its own image's, in order
    assert result.get_response()["id"] == "r-7" and result.get_response()["model_version"] == "1"


def test_classification_extension_names_the_top_classes(client):
    output = triton.InferRequestedOutput("probabilities", class_count=3)
    result = client.infer(MODEL, [images_input([photo_bytes("JPEG")], [1])], outputs=[output])
    (top,) = result.as_numpy("probabilities")
    scores, indices, labels = zip(*(item.decode().split(":", 2) for item in top))
    assert len(top) == 3 and list(scores) == sorted(scores, reverse=True)
    assert labels[0] in PHOTO_PLAUSIBLE_LABELS and all(i.isdigit() for i in indices)


@pytest.mark.parametrize(("case", "status"), [
    ("not-an-image", 400), ("undecodable", 400), ("too-many", 400), ("unknown-output", 400),
    ("unknown-model", 404), ("unknown-version", 404),
])
def test_errors_reach_the_client_with_their_status(client, case, status):
    images = {"not-an-image": [b"%PDF-1.7"], "undecodable": [photo_bytes("JPEG")[:500]],
              "too-many": [photo_bytes("JPEG", (64, 48))] * 9}.get(case, [photo_bytes("JPEG", (64, 48))])
    outputs = [triton.InferRequestedOutput("logits")] if case == "unknown-output" else None
    model, version = {"unknown-model": ("resnet50", ""), "unknown-version": (MODEL, "2")}.get(case, (MODEL, ""))
    with pytest.raises(InferenceServerException) as raised:
        client.infer(model, [images_input(images, [len(images)])], model_version=version, outputs=outputs)
    assert raised.value.status() == str(status)
    assert raised.value.message()


def test_errors_are_the_protocol_json_body_and_bad_input_is_never_5xx(service):
    infer = service.url(f"/v2/models/{MODEL}/infer")
    for body in (b"{", b"[]", json.dumps({"inputs": [{"datatype": "BYTES", "shape": [1], "data": ["@@"]}]})):
        response = requests.post(infer, data=body, timeout=60)
        assert response.status_code == 400
        assert response.headers["Content-Type"] == "application/json"
        assert set(response.json()) == {"error"}
    assert requests.get(service.url("/v2/nothing"), timeout=60).status_code == 404
    assert requests.get(service.url("/v2"), timeout=60, allow_redirects=False).status_code == 200


def test_kserve_sdk_rest_client_checks_health_and_infers(service):
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    async def session():
        client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
        live = await client.is_server_live(service.base_url)
        ready = await client.is_model_ready(service.base_url, MODEL)
        tensor = InferInput("image", [1], "BYTES", [base64.b64encode(photo).decode()])
        response = await client.infer(service.base_url, InferRequest(MODEL, [tensor]), model_name=MODEL)
        return live, ready, response

    photo = photo_bytes("JPEG")
    live, ready, response = asyncio.run(session())
    assert live and ready
    (output,) = response.outputs
    probabilities = np.asarray(output.data, dtype=np.float32).reshape(output.shape)
    assert probabilities.shape == (1, 1000) and np.isclose(probabilities.sum(), 1.0, atol=1e-3)
    top = requests.post(service.url("/v1/classify"), data=photo, timeout=60).json()["predictions"][0]
    assert int(probabilities.argmax()) == top["class_id"], "v2 and v1 agree on the photo's class"
