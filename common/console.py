"""The few replica log lines a person watching ``serve run`` needs on its console: each replica's
start-up summary (the model, its runtime and precision, the cache) and every fault logged at ERROR,
traceback included. Per-request lines stay in the replicas' log files only, and so does Serve's
"Request failed." for a request a stage refused on purpose (a client's error, or overload).

Serve's throughput mode (``RAY_SERVE_THROUGHPUT_OPTIMIZED``) sets ``RAY_SERVE_LOG_TO_STDERR`` off:
the replicas' ``ray.serve`` logger then has no stream handler, every line goes only to the
replica's file under Ray's log directory, and the replica's ``sys.stderr`` is itself redirected
into that logger. :func:`show_on_console` adds a handler of its own for those few lines, writing
to the process's original stderr, which Ray forwards to the driver: the ``serve run`` console.
Lines are marked with Ray's own ``log_to_stderr`` flag, so with Serve's stream handler present
(throughput mode off) they show through it, and this adds nothing.
"""

from __future__ import annotations

import logging
import sys

from common.error_tracking import is_unexpected

# ``logger.info(..., extra=CONSOLE)``: a line the console shows.
CONSOLE = {"log_to_stderr": True}
_SERVE_LOGGER = "ray.serve"


class _ConsoleHandler(logging.StreamHandler):
    """Lines logged with ``extra=CONSOLE``, and faults: ERROR and above, unless the exception they
    carry is one the service expects."""

    def __init__(self) -> None:
        super().__init__(sys.__stderr__)
        self.setFormatter(logging.Formatter("%(levelname)s %(asctime)s %(message)s"))

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "log_to_stderr", None) is True:
            return True
        is_fault = not record.exc_info or is_unexpected(record.exc_info[1])
        return record.levelno >= logging.ERROR and is_fault


def show_on_console() -> None:
    """Call first in a replica's constructor, after Serve has configured its logger."""
    logger = logging.getLogger(_SERVE_LOGGER)
    # A plain StreamHandler is Serve's own console handler; its file handlers sit behind a
    # MemoryHandler, and FileHandler subclasses StreamHandler, hence the exact type check.
    if not any(type(handler) in (logging.StreamHandler, _ConsoleHandler) for handler in logger.handlers):
        logger.addHandler(_ConsoleHandler())
