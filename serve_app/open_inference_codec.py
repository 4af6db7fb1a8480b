"""The Open Inference Protocol (v2, REST) on the wire: parsing an infer request and encoding its
response, with Triton's binary tensor data and classification extensions, and the model metadata.

Plain functions, no Ray: the v2 routes (``serve_app/open_inference.py``) turn a request into images
here, run each through the same stages as ``/v1/classify``, and encode the predictions here.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass

import numpy as np

from common.contracts import Prediction
from common.errors import BadRequest

VERSION = "1"
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
EXTENSIONS = ["binary_tensor_data", "classification"]
HEADER_LENGTH = "inference-header-content-length"


@dataclass(frozen=True)
class InferRequest:
    request_id: str | None
    images: list[bytes]
    binary_output: bool
    # Triton's classification extension: the top k as "p:index:label"; None means all probabilities.
    classification: int | None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _mapping(value: object, what: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return value


def parse_infer_request(body: bytes, header_length: str | None, max_images: int, max_image_bytes: int) -> InferRequest:
    """Parse a v2 infer body: JSON alone, or a JSON header of ``header_length`` bytes followed by
    binary tensor data. Raises :class:`BadRequest` with a client-readable message."""
    json_part, binary = _split(body, header_length)
    try:
        request = json.loads(json_part)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the request body is not valid JSON") from None
    if not isinstance(request, dict):
        raise BadRequest("the request body must be a JSON object")
    inputs = request.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadRequest(f"exactly one input is expected, the encoded images in {INPUT_NAME!r}")
    images = _images(inputs[0], binary, max_images)
    too_large = [len(image) for image in images if len(image) > max_image_bytes]
    if too_large:
        raise BadRequest(f"an image of {too_large[0]} bytes is over the limit of {max_image_bytes} bytes")
    binary_output, classification = _output(request)
    request_id = request.get("id")
    return InferRequest(request_id if isinstance(request_id, str) else None, images, binary_output, classification)


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    if not (header_length.isascii() and header_length.isdigit()) or int(header_length) > len(body):
        raise BadRequest(f"Inference-Header-Content-Length {header_length!r} does not fit a body of {len(body)} bytes")
    return body[: int(header_length)], body[int(header_length):]


def _images(tensor: dict, binary: bytes, max_images: int) -> list[bytes]:
    if tensor.get("datatype") != "BYTES":
        raise BadRequest(f"input datatype must be BYTES (encoded images), not {tensor.get('datatype')!r}")
    shape = tensor.get("shape")
    if not (isinstance(shape, list) and shape and all(_is_int(d) for d in shape)
            and (len(shape) == 1 or shape[1:] == [1])):
        raise BadRequest(f"input shape must be [N] or [N, 1], not {shape!r}")
    count = shape[0]
    if not 1 <= count <= max_images:
        raise BadRequest(f"a request carries 1 to {max_images} images, not {count}")
    parameters = _mapping(tensor.get("parameters"), "input parameters")
    if "binary_data_size" in parameters:
        images = _binary_elements(binary, parameters["binary_data_size"])
    else:
        images = _base64_elements(tensor.get("data"))
    if len(images) != count:
        raise BadRequest(f"input shape says {count} images but {len(images)} were sent")
    return images


def _binary_elements(binary: bytes, size: object) -> list[bytes]:
    if not _is_int(size) or size != len(binary):
        raise BadRequest(f"binary_data_size {size!r} does not match the {len(binary)} bytes of binary data")
    elements, offset = [], 0
    while offset < len(binary):
        if offset + 4 > len(binary):
            raise BadRequest("binary tensor data ends inside an element's 4-byte length")
        (length,) = struct.unpack_from("<I", binary, offset)
        offset += 4
        if offset + length > len(binary):
            raise BadRequest("binary tensor data ends inside an element")
        elements.append(binary[offset: offset + length])
        offset += length
    return elements


def _base64_elements(data: object) -> list[bytes]:
    if isinstance(data, list) and data and all(isinstance(row, list) and len(row) == 1 for row in data):
        data = [row[0] for row in data]  # shape [N, 1] sent nested, row by row
    if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
        raise BadRequest("input data must be a list of base64 strings, one per image")
    try:
        return [base64.b64decode(item, validate=True) for item in data]
    except binascii.Error:
        raise BadRequest("input data holds a string that is not standard base64") from None


def _output(request: dict) -> tuple[bool, int | None]:
    binary = _mapping(request.get("parameters"), "request parameters").get("binary_data_output", False) is True
    outputs = request.get("outputs")
    if outputs is None:
        return binary, None
    if not isinstance(outputs, list) or len(outputs) != 1 or not isinstance(outputs[0], dict):
        raise BadRequest(f"the one output is {OUTPUT_NAME!r}")
    if outputs[0].get("name") != OUTPUT_NAME:
        raise BadRequest(f"unknown output {outputs[0].get('name')!r}; the one output is {OUTPUT_NAME!r}")
    parameters = _mapping(outputs[0].get("parameters"), "output parameters")
    binary = parameters.get("binary_data", binary) is True
    classification = parameters.get("classification")
    if classification is not None and not (_is_int(classification) and classification >= 1):
        raise BadRequest(f"classification must be a positive integer, not {classification!r}")
    return binary, classification


def encode_infer_response(request: InferRequest, model_name: str, predictions: list[Prediction],
                          num_classes: int) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers: plain JSON, or a JSON header plus binary data."""
    if request.classification is None:
        datatype, shape = "FP32", [len(predictions), num_classes]
        tensor = np.zeros(shape, dtype="<f4")
        for row, prediction in zip(tensor, predictions):
            for scored in prediction.classes:
                row[scored.class_id] = scored.score
        binary, data = tensor.tobytes(), tensor.ravel().tolist()
    else:
        datatype, shape = "BYTES", [len(predictions), request.classification]
        strings = [f"{c.score:.6f}:{c.class_id}:{c.label}" for p in predictions for c in p.classes]
        binary = b"".join(struct.pack("<I", len(s.encode())) + s.encode() for s in strings)
        data = strings
    output: dict = {"name": OUTPUT_NAME, "datatype": datatype, "shape": shape}
    response: dict = {"model_name": model_name, "model_version": VERSION, "outputs": [output]}
    if request.request_id is not None:
        response["id"] = request.request_id
    if not request.binary_output:
        output["data"] = data
        return json.dumps(response).encode(), {"content-type": "application/json"}
    output["parameters"] = {"binary_data_size": len(binary)}
    header = json.dumps(response).encode()
    return header + binary, {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(header))}


def model_metadata(model_name: str, num_classes: int, platform: str) -> dict:
    return {
        "name": model_name,
        "versions": [VERSION],
        "platform": platform,
        "inputs": [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [-1, 1]}],
        "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, num_classes]}],
    }
