"""What a burst costs, through the front door and straight to the ingress replica behind it.

    python -m loadtests.burst [--uploads 1500] [--rounds 2] [--steady 20] [--connect-at-burst]
        [--config serve_config.yaml] [--out FILE.json]

Starts `serve run` on the config (one node). Then, --rounds times, first through the front door
(HAProxy, on the config's port) and then to the ingress replica's own HTTP port (the one HAProxy
forwards to, in RAY_SERVE_DIRECT_INGRESS_MIN/MAX_HTTP_PORT): opens --uploads connections, sends a
fresh upload on every one at the same instant (with --connect-at-burst, opens each connection at
that instant too, as clients that arrive together do), and sends --steady fresh uploads per second
on connections of their own from 2 s before the burst to 13 s after it. Prints, per target: the
burst's uploads answered 200 and refused with 503, how long the refusals took, and how many steady
requests were refused. The two targets get the same requests, so their difference is the front
door's share of what a burst costs (docs/resilience.md, "Soak"). Load goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import psutil

from loadtests.driver import NO_ANSWER, percentile, require_loopback
from loadtests.photos import encode, make_unique, sample_photo
from loadtests.report import add_config_and_out, check_config, write_report
from loadtests.service import base_url, running_service, serve_config

HOST = "127.0.0.1"
STEADY_BEFORE_S, STEADY_AFTER_S = 2, 13
TIMEOUT_S = 60


class Uploads:
    """Raw HTTP/1.1 posts of a small JPEG, each made unique so that no cache answers it."""

    def __init__(self) -> None:
        self.jpeg = encode(sample_photo().resize((160, 120)), "JPEG", quality=85)

    def request(self) -> bytes:
        body = make_unique("JPEG", self.jpeg, os.urandom(16))
        return (f"POST /v1/classify HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/octet-stream\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


async def status_of(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    """The status of the response on this connection (NO_ANSWER if none came in time), which it closes."""
    try:
        line = await asyncio.wait_for(reader.readline(), TIMEOUT_S)
        await asyncio.wait_for(reader.read(), TIMEOUT_S)  # the rest, until the server closes
        return int(line.split()[1]) if line else NO_ANSWER
    except (asyncio.TimeoutError, ConnectionError, IndexError, ValueError):
        return NO_ANSWER
    finally:
        writer.close()


async def one_round(port: int, uploads: Uploads, count: int, steady_rps: float,
                    connect_at_burst: bool = False) -> dict:
    """``count`` uploads written at once, on connections opened beforehand or (``connect_at_burst``)
    at that instant, while steady uploads go on."""
    opened = [] if connect_at_burst else await asyncio.gather(*(asyncio.open_connection(HOST, port)
                                                                 for _ in range(count)))
    payloads = [uploads.request() for _ in range(count)]

    async def send(payload: bytes, connection: tuple | None = None) -> int:
        try:
            reader, writer = connection or await asyncio.open_connection(HOST, port)
        except OSError:  # refused or reset: no answer
            return NO_ANSWER
        writer.write(payload)
        return await status_of(reader, writer)

    async def timed(payload: bytes, connection: tuple | None, began: float) -> tuple[int, float]:
        status = await send(payload, connection)
        return status, time.monotonic() - began

    async def steady_one(delay: float) -> int:
        await asyncio.sleep(delay)
        return await send(uploads.request())

    steady = asyncio.gather(*(steady_one(i / steady_rps)
                              for i in range(int((STEADY_BEFORE_S + STEADY_AFTER_S) * steady_rps))))
    await asyncio.sleep(STEADY_BEFORE_S)
    began = time.monotonic()
    answers = await asyncio.gather(*(timed(payload, connection, began)
                                     for payload, connection in zip(payloads, opened or [None] * count)))
    steady_statuses = await steady
    refusals = sorted(seconds for status, seconds in answers if status == 503)
    return {
        "burst_200": sum(status == 200 for status, _ in answers),
        "burst_503": len(refusals),
        "burst_other": sum(status not in (200, 503) for status, _ in answers),
        "refusal_median_s": round(statistics.median(refusals), 2) if refusals else None,
        "refusal_p99_s": round(percentile(refusals, 99), 2) if refusals else None,
        "steady_sent": len(steady_statuses),
        "steady_refused": sum(status != 200 for status in steady_statuses),
    }


def ingress_port(config: dict, app: str) -> int:
    """The HTTP port the application's ingress replica listens on, of the config's range."""
    env = config["controller_options"]["runtime_env"]["env_vars"]
    ports = range(int(env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"]), int(env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"]) + 1)
    for process in psutil.process_iter(["cmdline"]):
        if f"ServeReplica:{app}:Ingress" in " ".join(process.info["cmdline"] or []):
            for connection in process.connections("tcp"):
                if connection.status == psutil.CONN_LISTEN and connection.laddr.port in ports:
                    return connection.laddr.port
    raise SystemExit(f"no ingress replica of {app!r} listens on {ports.start}-{ports.stop - 1}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--uploads", type=int, default=1500, help="uploads in each burst")
    parser.add_argument("--rounds", type=int, default=2, help="bursts to each target")
    parser.add_argument("--steady", type=float, default=20, help="steady uploads per second around each burst")
    parser.add_argument("--pause", type=float, default=20, help="seconds between bursts")
    parser.add_argument("--connect-at-burst", action="store_true",
                        help="open each burst connection at the burst's instant, not beforehand")
    add_config_and_out(parser)
    args = parser.parse_args()
    check_config(parser, args)
    config = serve_config(args.config)
    require_loopback(base_url(config))
    uploads, rounds = Uploads(), []
    with running_service(config, args.config.resolve().parent):
        targets = {"front door": int(config["http_options"]["port"]),
                   "ingress replica": ingress_port(config, config["applications"][0]["name"])}
        for n in range(args.rounds):
            for target, port in targets.items():
                time.sleep(args.pause)  # the previous burst's admitted uploads finish
                answers = asyncio.run(one_round(port, uploads, args.uploads, args.steady, args.connect_at_burst))
                result = {"target": target, "port": port, **answers}
                rounds.append(result)
                print(f"round {n + 1}, {target} (:{port}): {result['burst_200']} answered, {result['burst_503']} refused "
                      f"(median {result['refusal_median_s']} s, P99 {result['refusal_p99_s']} s), "
                      f"{result['steady_refused']} of {result['steady_sent']} steady requests refused", flush=True)
    if args.out:
        write_report(args, rounds=rounds)


if __name__ == "__main__":
    main()
