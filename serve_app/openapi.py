"""The OpenAPI 3.1 document of every route the ingress serves (``GET /openapi.json``).

Written by hand; which operations need the API key comes from the route table
(``serve_app/routes.py``), and ``tests/unit/test_openapi.py`` validates the document and checks
that it names exactly the routes in that table.
"""

from __future__ import annotations

from typing import Any

from serve_app.routes import ROUTES

ERROR = {"$ref": "#/components/schemas/Error"}
V2_ERROR = {"$ref": "#/components/schemas/OpenInferenceError"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int, schema: dict = ERROR) -> dict:
    meaning = {400: "The request is malformed, or asks for what the server does not support.",
               404: "No such model, version or route.",
               405: "Wrong method for the route.", 408: "The request took longer than the server's limit.",
               413: "The body is larger than MAX_UPLOAD_BYTES.", 415: "Not a JPEG, PNG, GIF or WebP image.",
               422: "The image does not decode, or is too large in pixels.",
               503: "Overloaded or not ready; retry after Retry-After seconds."}
    return {str(status): _json(schema, meaning[status]) for status in statuses}


def _operation(summary: str, responses: dict, **extra: Any) -> dict:
    return {"summary": summary, "responses": responses, **extra}


_MODEL_PARAMS = [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}]
_VERSION_PARAMS = [*_MODEL_PARAMS, {"name": "version", "in": "path", "required": True,
                                    "schema": {"type": "string", "enum": ["1"]}}]
_HTML = {"description": "An HTML page.", "content": {"text/html": {"schema": {"type": "string"}}}}


def _v2_model_paths(prefix: str, parameters: list) -> dict:
    infer_request = {"$ref": "#/components/schemas/InferRequest"}
    return {
        prefix: {"get": _operation("Model metadata", {"200": _json({"type": "object"}, "Model metadata."),
                                                      **_errors(404, schema=V2_ERROR)}, parameters=parameters)},
        prefix + "/ready": {"get": _operation(
            "Model readiness", {"200": _json({"type": "object"}, "The model is ready."),
                                **_errors(404, 503, schema=V2_ERROR)}, parameters=parameters)},
        prefix + "/infer": {"post": _operation(
            "Classify 1 to MAX_BATCH_IMAGES encoded images (Open Inference Protocol, binary or JSON tensors)",
            {"200": {"description": "FP32 [N, classes] probabilities, or BYTES [N, k] \"p:index:label\" with the "
                                    "classification extension; JSON, or JSON plus binary tensor data.",
                     "content": {"application/json": {"schema": {"type": "object"}},
                                 "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
             **_errors(400, 404, 503, schema=V2_ERROR)},
            parameters=parameters,
            requestBody={"required": True, "content": {"application/json": {"schema": infer_request},
                                                       "application/octet-stream": {"schema": {"type": "string"}}}},
        )},
    }


# Open routes stay open; every other operation needs the API key when API_KEYS_FILE is set.
_OPEN_OPERATIONS = {(route.path, route.method.lower()) for route in ROUTES if route.open}
_KEY_ERRORS = {
    "401": _json(ERROR, "API keys are on and the Bearer key is missing, malformed or unknown."),
    "429": _json(ERROR, "The key is over its rate limit; retry after Retry-After seconds."),
}


def _with_key_checks(paths: dict) -> dict:
    """Mark every operation but the open routes' as needing the bearer key, with its errors."""
    for path, operations in paths.items():
        for method, operation in operations.items():
            if (path, method) in _OPEN_OPERATIONS:
                operation["security"] = []
            else:
                operation["responses"] = {**operation["responses"], **_KEY_ERRORS}
    return paths


def openapi_document(version: str) -> dict:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Image classification service", "version": version,
                 "description": "Classify JPEG, PNG, GIF and WebP images with an ImageNet model."},
        "security": [{"apiKey": []}],
        "paths": _with_key_checks({
            "/": {"get": _operation("Upload page for a person", {"200": _HTML})},
            "/docs": {"get": _operation("This document, rendered for a person", {"200": _HTML})},
            "/openapi.json": {"get": _operation("This document", {"200": _json({"type": "object"}, "OpenAPI 3.1.")})},
            "/healthz": {"get": _operation("Liveness", {"200": _json({"type": "object"}, "The ingress runs.")})},
            "/readyz": {"get": _operation("Readiness of every stage", {
                "200": _json({"type": "object"}, "Every stage passes its self-test."), **_errors(503)})},
            "/v1/classify": {"post": _operation(
                "Classify one image",
                {"200": _json({"$ref": "#/components/schemas/Classification"}, "The top classes."),
                 **_errors(400, 404, 408, 413, 415, 422, 503)},
                parameters=[{"name": "top_k", "in": "query",
                             "schema": {"type": "integer", "minimum": 1, "default": 5}},
                            {"name": "model", "in": "query", "description": "A served model (GET /v1/models); "
                             "absent: the default model.", "schema": {"type": "string"}}],
                requestBody={"required": True, "content": {
                    "image/*": {"schema": {"type": "string", "format": "binary"}},
                    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                    "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                        "file": {"type": "string", "format": "binary"}}}},
                }},
            )},
            "/v1/model": {"get": _operation("The default model, its runtime and the cache settings", {
                "200": _json({"type": "object"}, "Model description."), **_errors(503)})},
            "/v1/models": {"get": _operation("Every served model, described as /v1/model, the default first", {
                "200": _json({"type": "object", "properties": {"models": {"type": "array", "items": {
                    "type": "object"}}}}, "The model repository."), **_errors(503)})},
            "/v2": {"get": _operation("Server metadata (Open Inference Protocol)", {
                "200": _json({"type": "object"}, "Name, version and extensions.")})},
            "/v2/health/live": {"get": _operation("Server liveness", {"200": _json({"type": "object"}, "Live.")})},
            "/v2/health/ready": {"get": _operation("Server readiness", {
                "200": _json({"type": "object"}, "Ready."), **_errors(503, schema=V2_ERROR)})},
            **_v2_model_paths("/v2/models/{model}", _MODEL_PARAMS),
            **_v2_model_paths("/v2/models/{model}/versions/{version}", _VERSION_PARAMS),
            "/v2/repository/index": {"post": _operation("The model repository (Triton's repository extension)", {
                "200": _json({"type": "array", "items": {"type": "object", "properties": {
                    "name": {"type": "string"}, "version": {"type": "string"}, "state": {"type": "string"},
                    "reason": {"type": "string"}}}}, "Every served model."), **_errors(503, schema=V2_ERROR)})},
            **{f"/v2/repository/models/{{model}}/{action}": {"post": _operation(
                f"Not supported: the models are those of serve_config.yaml ({action})",
                _errors(400, schema=V2_ERROR), parameters=_MODEL_PARAMS)} for action in ("load", "unload")},
        }),
        "components": {
            "securitySchemes": {"apiKey": {
                "type": "http", "scheme": "bearer",
                "description": "Only when the server sets API_KEYS_FILE; otherwise every route is open."}},
            "schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message", "request_id"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                               "request_id": {"type": "string"}}}}},
            "OpenInferenceError": {"type": "object", "required": ["error"],
                                   "properties": {"error": {"type": "string"}}},
            "Classification": {"type": "object", "properties": {
                "request_id": {"type": "string"},
                "model": {"type": "object", "properties": {"name": {"type": "string"}, "version": {"type": "string"}}},
                "image": {"type": "object", "properties": {
                    "format": {"type": "string"}, "width": {"type": "integer"}, "height": {"type": "integer"}}},
                "predictions": {"type": "array", "items": {"type": "object", "properties": {
                    "class_id": {"type": "integer"}, "label": {"type": "string"}, "score": {"type": "number"}}}},
                "cached": {"type": "boolean"}}},
            "InferRequest": {"type": "object", "required": ["inputs"], "properties": {
                "id": {"type": "string"},
                "inputs": {"type": "array", "minItems": 1, "maxItems": 1, "items": {"type": "object"}},
                "outputs": {"type": "array", "items": {"type": "object"}},
                "parameters": {"type": "object"}}},
            },
        },
    }
