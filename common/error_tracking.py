"""Sentry error tracking: unexpected exceptions, tagged with the request ID; never client errors,
overload or recovery.

Off unless ``SENTRY_DSN`` is set. Sentry's default integrations stay off, so nothing is sent
behind our back (its logging integration would turn every error log line into a second event).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import sentry_sdk

from common.errors import ClientError, Unavailable
from common.settings import Settings


def init_error_tracking(settings: Settings, **options) -> bool:
    """Start Sentry in this process if a DSN is configured; True when it is on."""
    if not settings.sentry_dsn:
        return False
    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.sentry_environment,
        default_integrations=False,
        send_default_pii=False,
        **options,
    )
    return True


def is_unexpected(exc: BaseException) -> bool:
    """A client's mistake or a load spike is expected; everything else is a fault worth reporting."""
    return not isinstance(exc, (ClientError, Unavailable))


def report(exc: BaseException, request_id: str | None) -> None:
    if not is_unexpected(exc):
        return
    with sentry_sdk.new_scope() as scope:
        if request_id:
            scope.set_tag("request_id", request_id)
        sentry_sdk.capture_exception(exc)


def reports_unexpected_errors(method: Callable) -> Callable:
    """Decorate an async deployment method taking ``request_id``: report its unexpected exceptions.
    Every stage method the graph calls is async; a sync one is refused when its class is defined."""
    if not inspect.iscoroutinefunction(method):
        raise TypeError(f"{method.__qualname__}: reports_unexpected_errors decorates async methods")
    signature = inspect.signature(method)

    @functools.wraps(method)
    async def wrapper(*args, **kwargs):
        try:
            return await method(*args, **kwargs)
        except Exception as exc:
            report(exc, signature.bind_partial(*args, **kwargs).arguments.get("request_id"))
            raise

    return wrapper
