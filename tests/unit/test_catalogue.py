"""tests/catalogue.py, the crafted uploads that tests/integration/test_catalogue.py sends over
real HTTP: one of every accepted format, and one for every error an upload's bytes can cause."""

from __future__ import annotations

from common import errors
from tests.catalogue import CASES


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
