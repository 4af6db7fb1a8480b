from openapi_spec_validator import validate

from serve_app.ingress import OPENAPI, ROUTES


def test_the_document_is_valid_openapi_3_1():
    validate(OPENAPI)
    assert OPENAPI["openapi"].startswith("3.1")


def test_every_route_served_is_described_and_nothing_more():
    described = {(path, method.upper()) for path, operations in OPENAPI["paths"].items() for method in operations}
    served = {(path, method) for path, method, _ in ROUTES}
    assert described == served


def test_errors_have_their_schemas():
    schemas = OPENAPI["components"]["schemas"]
    assert schemas["Error"]["properties"]["error"]["required"] == ["code", "message", "request_id"]
    infer = OPENAPI["paths"]["/v2/models/{model}/infer"]["post"]["responses"]
    assert infer["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/OpenInferenceError"}


def test_key_protected_operations_say_so_and_health_stays_open():
    for path, operations in OPENAPI["paths"].items():
        for operation in operations.values():
            if path in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"):
                assert operation["security"] == [], path
            else:
                assert {"401", "429"} <= set(operation["responses"]), path
