"""The CPU one hop between deployments costs, by what crosses it: would the validator be cheaper to
call with a prefix of the upload instead of the whole body, or with pickle instead of cloudpickle?

    python -m loadtests.hop_cost [--calls 1500] [--rounds 3] [--prefix-bytes 4096] [--rate 80]
        [--paced-seconds 10]

Starts a Ray cluster of its own (its temp dir under /tmp, no HTTP proxy) with serve_config.yaml's Serve
environment (so calls go over gRPC, as in the shipped graph), deploys the real Validation
deployment alone, and calls its ``validate`` from this process over a DeploymentHandle, 8 calls at a
time, in turn with:

* ``whole``: distinct 640x480 photo JPEGs (~100 KB, as loadtests.bench sends), whole, as today;
* ``prefix``: their first --prefix-bytes bytes, enough for the validator's checks on these photos;
* ``pickle``: the whole photos, with the handle's request and response serialisation set to
  ``pickle`` instead of Serve's default ``cloudpickle``.

With ``--rate R``, a fourth variant, ``paced``, sends the whole photos one call at a time, a call
every 1/R s for --paced-seconds: the rate each hop sees in the graph (70-120 requests/s on this
machine), against the thousand and more calls a second of the others. Each process's fixed
background work is measured with no calls, so that it can be told apart from the cost of a call.

The variants alternate within each round, and CPU per call is read from /proc for the replica and
the caller, so the host's drift between rounds shows instead of passing for a difference; the
replica's CPU is also split by thread. It also times the serialisers alone on the messages the
graph sends. Stops the cluster it started.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pickle
import statistics
import tempfile
import time

from loadtests.cpu import (
    cpu_seconds_by_process,
    cpu_seconds_by_thread_name,
    cpu_seconds_of,
)
from loadtests.payloads import distinct_photos
from loadtests.service import serve_config

APP_NAME = "hop-cost"
CONCURRENCY = 8


def serialiser_micro_seconds(photos: list[bytes]) -> dict[str, float]:
    """Microseconds to dump and load the largest messages of one request, per serialiser."""
    import numpy as np
    from ray import cloudpickle

    from common.contracts import DecodedImage

    messages = [
        ((photos[0], "0" * 32), {}),  # validate()'s arguments: the upload and the request ID
        # classify()'s: the decoded image, the upload's SHA-256, top_k and the request ID
        ((DecodedImage(np.zeros((224, 224, 3), np.uint8), 640, 480, "jpeg"), "0" * 64, 5, "0" * 32), {}),
    ]
    result = {}
    for name, dumps, loads in (
        ("cloudpickle", cloudpickle.dumps, cloudpickle.loads),
        ("pickle", lambda obj: pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL), pickle.loads),
    ):
        started, repeats = time.perf_counter(), 2000
        for _ in range(repeats):
            for message in messages:
                loads(dumps(message))
        result[name] = (time.perf_counter() - started) / repeats * 1e6
    return result


def replica_pid() -> str:
    pids = [pid for pid, (command, _) in cpu_seconds_by_process().items() if f"ServeReplica:{APP_NAME}:" in command]
    if len(pids) != 1:
        raise RuntimeError(f"expected one {APP_NAME} replica process, found {len(pids)}")
    return pids[0]


async def drive(handle, payloads: list[bytes], calls: int) -> None:
    queue = iter(range(calls))

    async def worker() -> None:
        for index in queue:
            await handle.validate.remote(payloads[index % len(payloads)], f"hop-{index}")

    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))


async def drive_paced(handle, payloads: list[bytes], calls: int, rate: float) -> None:
    """One call at a time, each started 1/rate s after the previous one was due (or when it ends,
    if it took longer)."""
    started = time.perf_counter()
    for index in range(calls):
        await asyncio.sleep(max(0.0, started + index / rate - time.perf_counter()))
        await handle.validate.remote(payloads[index % len(payloads)], f"hop-{index}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1500, help="calls per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prefix-bytes", type=int, default=4096)
    parser.add_argument("--rate", type=float, help="also send the whole photos one at a time at this many calls/s")
    parser.add_argument("--paced-seconds", type=float, default=10, help="how long the paced variant runs per round")
    args = parser.parse_args()

    # Before Ray is imported: Serve reads these once, and Ray's workers inherit this environment.
    os.environ.update(serve_config()["controller_options"]["runtime_env"]["env_vars"])
    photos = distinct_photos(64, quality=92)  # as loadtests.bench sends them
    print(f"{len(photos)} photos, {statistics.median(map(len, photos)) / 1024:.0f} KB median; "
          f"prefix {args.prefix_bytes} bytes", flush=True)
    for name, micros in serialiser_micro_seconds(photos).items():
        print(f"{name}: {micros:.1f} us to dump and load one request's two largest messages", flush=True)

    import ray
    from ray import serve

    # address="local": a cluster of its own, never one already running on this machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _temp_dir=tempfile.mkdtemp(prefix="ray-hop-cost-"))
    try:
        serve.start(proxy_location="Disabled")
        results = asyncio.run(measure(photos, args))
    finally:
        ray.shutdown()
    print("\nmedian CPU per call, ms: replica + caller = hop")
    for name, rows in results.items():
        replica, caller = statistics.median(r for r, _ in rows), statistics.median(c for _, c in rows)
        print(f"  {name:7s} {replica:.3f} + {caller:.3f} = {replica + caller:.3f}")


async def measure(photos: list[bytes], args: argparse.Namespace) -> dict[str, list[tuple[float, float]]]:
    """Deploy the validator and measure it. One event loop throughout: in the throughput mode the
    handle's router runs on the caller's loop."""
    from ray import serve

    from deployments.validation import Validation

    handle = serve.run(Validation.options(ray_actor_options={"num_cpus": 0}).bind(), name=APP_NAME, route_prefix=None)
    try:
        return await measure_variants(handle, photos, args)
    finally:
        await serve.shutdown_async()


async def measure_variants(handle, photos: list[bytes], args: argparse.Namespace) -> dict[str, list[tuple[float, float]]]:
    """(replica, caller) CPU ms per call, per variant and round; each round starts one variant later,
    so that none always runs first."""
    pickled = handle.options(request_serialization="pickle", response_serialization="pickle")
    prefixes = [photo[: args.prefix_bytes] for photo in photos]
    # name -> (number of calls, what makes them)
    variants = {
        "whole": (args.calls, lambda calls: drive(handle, photos, calls)),
        "prefix": (args.calls, lambda calls: drive(handle, prefixes, calls)),
        "pickle": (args.calls, lambda calls: drive(pickled, photos, calls)),
    }
    if args.rate:
        variants["paced"] = (round(args.rate * args.paced_seconds),
                             lambda calls: drive_paced(handle, photos, calls, args.rate))
    for _, make_calls in variants.values():  # warm-up, and proof that each variant validates
        await make_calls(200)
    pid = replica_pid()
    await report_background(pid)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    names = list(variants)
    for round_index in range(args.rounds):
        for name in names[round_index % len(names):] + names[: round_index % len(names)]:
            calls, make_calls = variants[name]
            # The caller's clock brackets only the calls, not the reading of the replica's CPU from /proc.
            replica_before, threads_before = cpu_seconds_of(pid), cpu_seconds_by_thread_name(pid)
            caller_before, started = time.process_time(), time.perf_counter()
            await make_calls(calls)
            caller_ms = (time.process_time() - caller_before) / calls * 1000
            wall = time.perf_counter() - started
            replica_ms = (cpu_seconds_of(pid) - replica_before) / calls * 1000
            threads = cpu_seconds_by_thread_name(pid) - threads_before
            results[name].append((replica_ms, caller_ms))
            busiest = ", ".join(f"{thread} {seconds / calls * 1000:.3f}" for thread, seconds in threads.most_common(2))
            print(f"round {round_index + 1} {name:7s} {calls / wall:7.0f} calls/s   "
                  f"replica {replica_ms:.3f} ms/call ({busiest})   caller {caller_ms:.3f} ms/call", flush=True)
    return results


async def report_background(pid: str, seconds: float = 10) -> None:
    """The replica's and the caller's CPU with no calls: Serve's own periodic work."""
    replica_before, caller_before = cpu_seconds_of(pid), time.process_time()
    await asyncio.sleep(seconds)
    print(f"no calls: replica {(cpu_seconds_of(pid) - replica_before) / seconds * 1000:.1f} ms of CPU/s, "
          f"caller {(time.process_time() - caller_before) / seconds * 1000:.1f} ms/s", flush=True)


if __name__ == "__main__":
    main()
