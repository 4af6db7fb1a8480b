"""The console lines of a replica (common/console.py): start-up summaries and faults reach the
process's stderr; per-request lines and the errors the service expects do not."""

from __future__ import annotations

import logging

import pytest

from common.console import CONSOLE, show_on_console
from common.errors import UnsupportedMediaType


@pytest.fixture
def serve_logger():
    """Serve's replica logger as throughput mode leaves it: no stream handler, files only."""
    logger = logging.getLogger("ray.serve")
    saved = logger.handlers[:], logger.propagate, logger.level
    logger.handlers, logger.propagate = [logging.NullHandler()], False
    logger.setLevel(logging.INFO)
    yield logger
    logger.handlers, logger.propagate = saved[0], saved[1]
    logger.setLevel(saved[2])


def test_start_up_lines_and_faults_reach_stderr_and_per_request_lines_do_not(serve_logger, capfd):
    show_on_console()
    serve_logger.info("model m@1 loaded: openvino f32 on cpu; model cache: enabled, size 256", extra=CONSOLE)
    serve_logger.info("request r-1: cache hit")
    try:
        raise RuntimeError("injected fault")
    except RuntimeError:
        serve_logger.exception("Request failed.")
    try:
        raise UnsupportedMediaType("not an image")
    except UnsupportedMediaType:
        serve_logger.exception("Request refused on purpose.")
    err = capfd.readouterr().err
    assert "size 256" in err
    assert "Request failed." in err and "RuntimeError: injected fault" in err, "a fault and its traceback"
    assert "cache hit" not in err and "refused on purpose" not in err


def test_shown_once_whether_or_not_serve_has_its_own_stream_handler(serve_logger, capfd):
    show_on_console()
    show_on_console()
    serve_logger.info("model cache: enabled, size 64", extra=CONSOLE)
    assert capfd.readouterr().err.count("size 64") == 1
    serve_logger.handlers = [logging.StreamHandler()]  # Serve's, with RAY_SERVE_LOG_TO_STDERR on
    show_on_console()
    serve_logger.info("model cache: enabled, size 128", extra=CONSOLE)
    assert capfd.readouterr().err.count("size 128") == 1
