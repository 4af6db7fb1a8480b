"""Every crafted upload in tests/catalogue.py, over real HTTP, gets its exact status and error code."""

from __future__ import annotations

import pytest
import requests

from common import errors
from tests.catalogue import CASES

pytestmark = pytest.mark.integration


# Refusals with no upload in the catalogue: they depend on the route, the query, the multipart
# framing or the clock, not on the image bytes, and have tests of their own.
NOT_ABOUT_THE_IMAGE = {errors.NotFound, errors.MethodNotAllowed, errors.RequestTimeout, errors.InvalidParameter,
                       errors.MalformedMultipart, errors.DecodeTimeout, errors.Unauthorized, errors.RateLimited,
                       errors.ClientError}


def _client_errors(cls=errors.ClientError):
    for sub in cls.__subclasses__():
        yield sub
        yield from _client_errors(sub)


def test_catalogue_covers_every_format_and_every_upload_error():
    assert len({case.name for case in CASES}) == len(CASES)
    assert {case.format for case in CASES if case.status == 200} == {"jpeg", "png", "gif", "webp"}
    upload_errors = {cls.code for cls in _client_errors()} - {cls.code for cls in NOT_ABOUT_THE_IMAGE}
    assert upload_errors - {case.code for case in CASES} == set()


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_upload_gets_its_exact_answer(service, case):
    response = requests.post(
        service.url("/v1/classify"), data=case.make(), headers=case.headers, timeout=60
    )
    assert response.status_code == case.status, response.text
    body = response.json()
    if case.status == 200:
        assert body["image"]["format"] == case.format
        assert len(body["predictions"]) == 5
    else:
        assert body["error"]["code"] == case.code, body
        assert body["error"]["request_id"] == response.headers["X-Request-ID"]
        assert "object at 0x" not in body["error"]["message"]
