"""The load driver of the measuring tools: N connections posting back to back (a closed loop) for
T seconds or until N requests are done, each request's latency and HTTP status kept. Load only
goes to this machine's loopback interface."""

from __future__ import annotations

import asyncio
import collections
import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlparse

import aiohttp

NO_ANSWER = 0  # the status counted for a request that got no HTTP answer (refused, reset, timed out)


def require_loopback(url: str) -> str:
    host = urlparse(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise SystemExit(f"refusing to send load to {url!r}: only 127.0.0.1/localhost are allowed")
    return url.rstrip("/")


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list; NaN when it is empty."""
    if not ordered:
        return float("nan")
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def summarise(latencies_ms: list[float], failures: int, seconds: float) -> dict:
    """Requests, failures, throughput and latency percentiles of a set of requests."""
    ordered = sorted(latencies_ms)
    return {
        "requests": len(ordered),
        "failures": failures,
        "failure_ratio": failures / len(ordered) if ordered else 0.0,
        "rps": len(ordered) / seconds if seconds > 0 else 0.0,
        "p50_ms": percentile(ordered, 50),
        "p95_ms": percentile(ordered, 95),
        "p99_ms": percentile(ordered, 99),
    }


@dataclass(frozen=True)
class Load:
    """What one drive saw: every request's latency, the count of each status, the wall time."""

    latencies_ms: list[float]
    statuses: collections.Counter
    seconds: float

    def summary(self, expected_status: int = 200) -> dict:
        failures = sum(count for status, count in self.statuses.items() if status != expected_status)
        return summarise(self.latencies_ms, failures, self.seconds)


def drive(url: str, payload: Callable[[], bytes], connections: int, *, seconds: float | None = None,
          requests: int | None = None, timeout_s: float = 60) -> Load:
    """POST ``payload()`` to ``url`` from ``connections`` connections at once, each sending its
    next request when the last one is answered, for ``seconds`` or ``requests`` in all."""
    if (seconds is None) == (requests is None):
        raise ValueError("give either seconds or requests")
    return asyncio.run(_drive(require_loopback(url), payload, connections, seconds, requests, timeout_s))


async def _drive(url: str, payload: Callable[[], bytes], connections: int, seconds: float | None,
                 requests: int | None, timeout_s: float) -> Load:
    latencies: list[float] = []
    statuses: collections.Counter = collections.Counter()
    started = time.monotonic()
    deadline = started + seconds if seconds is not None else math.inf
    left = requests if requests is not None else math.inf

    def another() -> bool:
        nonlocal left
        if left <= 0 or time.monotonic() >= deadline:
            return False
        left -= 1
        return True

    async def connection(session: aiohttp.ClientSession) -> None:
        while another():
            body = payload()
            sent = time.monotonic()
            try:
                async with session.post(url, data=body) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, asyncio.TimeoutError):
                status = NO_ANSWER
            latencies.append((time.monotonic() - sent) * 1000)
            statuses[status] += 1

    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:
        await asyncio.gather(*(connection(session) for _ in range(connections)))
    return Load(latencies, statuses, time.monotonic() - started)
