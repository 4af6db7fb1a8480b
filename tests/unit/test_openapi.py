from openapi_spec_validator import validate

from serve_app.ingress import OPENAPI
from serve_app.routes import ROUTES


def test_the_document_is_valid_openapi_3_1():
    validate(OPENAPI)
    assert OPENAPI["openapi"].startswith("3.1")


def test_every_route_served_is_described_and_nothing_more():
    described = {(path, method.upper()) for path, operations in OPENAPI["paths"].items() for method in operations}
    served = {(route.path, route.method) for route in ROUTES}
    assert described == served


def test_errors_have_their_schemas():
    schemas = OPENAPI["components"]["schemas"]
    assert schemas["Error"]["properties"]["error"]["required"] == ["code", "message", "request_id"]
    infer = OPENAPI["paths"]["/v2/models/{model}/infer"]["post"]["responses"]
    assert infer["400"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/OpenInferenceError"}


def test_key_protected_operations_say_so_and_open_routes_stay_open():
    for route in ROUTES:
        operation = OPENAPI["paths"][route.path][route.method.lower()]
        if route.open:
            assert operation["security"] == [], route
        else:
            assert {"401", "429"} <= set(operation["responses"]), route
    assert {route.path for route in ROUTES if route.open} == {
        "/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"}
