"""Every crafted upload in tests/catalogue.py, over real HTTP, gets its exact status and error code."""

from __future__ import annotations

import pytest
import requests

from tests.catalogue import CASES

pytestmark = pytest.mark.integration


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
