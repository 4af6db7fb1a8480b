"""Parsing and encoding the Open Inference Protocol (v2) as the v2 routes do, without Ray."""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.contracts import Prediction, ScoredClass
from common.errors import BadRequest
from serve_app.open_inference_codec import encode_infer_response, parse_infer_request


def parse(body: bytes, header_length: str | None = None, max_images: int = 8):
    return parse_infer_request(body, header_length, max_images, max_image_bytes=1024)


def binary_request(images: list[bytes], shape: list[int], **extra) -> tuple[bytes, str]:
    data = b"".join(struct.pack("<I", len(i)) + i for i in images)
    header = json.dumps({"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": shape,
                                     "parameters": {"binary_data_size": len(data)}}], **extra}).encode()
    return header + data, str(len(header))


def json_request(images: list[bytes], shape: list[int], **extra) -> bytes:
    data = [base64.b64encode(i).decode() for i in images]
    return json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": shape, "data": data}],
                       **extra}).encode()


@pytest.mark.parametrize("shape", [[2], [2, 1]])
def test_binary_and_base64_images_parse_to_the_same_bytes(shape):
    images = [b"\xff\xd8\xffone", b"\x89PNGtwo"]
    body, header_length = binary_request(images, shape, id="req-1")
    binary = parse(body, header_length)
    from_json = parse(json_request(images, shape))
    assert binary.images == from_json.images == images
    assert binary.request_id == "req-1" and from_json.request_id is None
    assert (binary.binary_output, binary.classification) == (False, None)


@pytest.mark.parametrize(("body", "header_length", "message"), [
    (b"not json", None, "not valid JSON"),
    (json.dumps({"inputs": []}).encode(), None, "exactly one input"),
    (json.dumps({"inputs": [{"datatype": "FP32", "shape": [1], "data": [1.0]}]}).encode(), None, "BYTES"),
    (json_request([b"a"] * 3, [3, 2]), None, "shape must be"),
    (json_request([b"a"] * 9, [9]), None, "1 to 8 images"),
    (json_request([b"a"], [2]), None, "says 2 images but 1"),
    (json.dumps({"inputs": [{"datatype": "BYTES", "shape": [1], "data": ["%%%"]}]}).encode(), None, "base64"),
    (json_request([b"a"], [1], outputs=[{"name": "logits"}]), None, "unknown output 'logits'"),
    (json_request([b"a"], [1], outputs=[{"name": "probabilities", "parameters": {"classification": 0}}]), None,
     "positive integer"),
    (b"{}", "99", "does not fit"),
    (b"{}", "\u00b2", "does not fit"),
    (json_request([b"a"], [1], parameters=None) .replace(b'"parameters": null', b'"parameters": "x"'), None,
     "request parameters must be a JSON object"),
    (json.dumps({"inputs": [{"datatype": "BYTES", "shape": [1], "parameters": [1], "data": ["YQ=="]}]}).encode(),
     None, "input parameters must be a JSON object"),
    (json.dumps({"inputs": [{"datatype": "BYTES", "shape": [1, True], "data": ["YQ=="]}]}).encode(), None,
     "shape must be"),
    (json_request([b"a"], [1], outputs=[{"name": "probabilities", "parameters": {"classification": True}}]), None,
     "positive integer"),
    (json_request([b"a" * 1025], [1]), None, "over the limit of 1024 bytes"),
])
def test_what_the_client_got_wrong_is_a_bad_request_that_says_what(body, header_length, message):
    with pytest.raises(BadRequest, match=message):
        parse(body, header_length)


def test_nested_n_by_1_base64_is_read_row_by_row():
    body = json.dumps({"inputs": [{"datatype": "BYTES", "shape": [2, 1], "data": [["YQ=="], ["Yg=="]]}]}).encode()
    assert parse(body).images == [b"a", b"b"]


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                    max_leaves=12)
KEYS = st.sampled_from(["inputs", "outputs", "parameters", "id", "datatype", "shape", "data", "name",
                        "binary_data_size", "binary_data", "binary_data_output", "classification"])
PROTOCOLISH = st.recursive(JSON, lambda inner: st.dictionaries(KEYS, inner, max_size=5) | st.lists(inner, max_size=3),
                           max_leaves=20)


@settings(max_examples=1500, deadline=None)
@given(PROTOCOLISH, st.binary(max_size=64), st.one_of(st.none(), st.text(max_size=4)))
def test_hostile_requests_only_ever_raise_bad_request(document, tail, header_length):
    body = json.dumps(document).encode()
    try:
        parse(body + tail if header_length is not None else body, header_length)
    except BadRequest:
        pass


def test_truncated_binary_data_is_a_bad_request():
    body, header_length = binary_request([b"abcdef"], [1])
    header = json.loads(body[: int(header_length)])
    header["inputs"][0]["parameters"]["binary_data_size"] = 7
    short = json.dumps(header).encode()
    with pytest.raises(BadRequest, match="ends inside an element"):
        parse(short + body[int(header_length):][:7], str(len(short)))


def prediction(*classes: tuple[int, str, float]) -> Prediction:
    return Prediction("m", "v", tuple(ScoredClass(*c) for c in classes), False, 1, 1, "jpeg")


def test_probabilities_come_back_dense_in_json_or_binary():
    predictions = [prediction((2, "c", 0.75), (0, "a", 0.25)), prediction((1, "b", 1.0))]
    as_json = parse(json_request([b"x", b"y"], [2], id="q"))
    body, headers = encode_infer_response(as_json, "m", predictions, num_classes=3)
    response = json.loads(body)
    assert headers == {"content-type": "application/json"}
    assert response["id"] == "q" and response["model_version"] == "1"
    assert response["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [2, 3],
                                    "data": [0.25, 0.0, 0.75, 0.0, 1.0, 0.0]}]

    as_binary = parse(json_request([b"x", b"y"], [2], parameters={"binary_data_output": True}))
    body, headers = encode_infer_response(as_binary, "m", predictions, num_classes=3)
    header_length = int(headers["inference-header-content-length"])
    assert headers["content-type"] == "application/octet-stream"
    output = json.loads(body[:header_length])["outputs"][0]
    assert output["parameters"]["binary_data_size"] == 24 and "data" not in output
    np.testing.assert_array_equal(np.frombuffer(body[header_length:], "<f4").reshape(2, 3),
                                  [[0.25, 0, 0.75], [0, 1, 0]])


def test_classification_extension_gives_score_index_label_strings():
    request = parse(json_request([b"x"], [1], outputs=[
        {"name": "probabilities", "parameters": {"classification": 2, "binary_data": True}}]))
    body, headers = encode_infer_response(request, "m", [prediction((2, "cat", 0.75), (0, "dog", 0.25))], 3)
    header_length = int(headers["inference-header-content-length"])
    output = json.loads(body[:header_length])["outputs"][0]
    assert (output["datatype"], output["shape"]) == ("BYTES", [1, 2])
    binary, strings = body[header_length:], []
    while binary:
        (length,) = struct.unpack_from("<I", binary)
        strings.append(binary[4: 4 + length].decode())
        binary = binary[4 + length:]
    assert strings == ["0.750000:2:cat", "0.250000:0:dog"]
