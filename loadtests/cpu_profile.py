"""CPU time per process and per request while the graph is saturated, from /proc.

    python -m loadtests.cpu_profile [--connections 8] [--duration 20] [--serve-env KEY=VALUE ...]
        [--log-level WARNING] [--access-log DEPLOYMENT=off ...] [--out docs/cpu_profile.json]
        [ENV=VALUE ...]

Starts `serve run serve_config.yaml` with the cache off (plus any ENV=VALUE given, e.g.
LOG_LEVEL=WARNING), drives it with distinct 640x480 JPEGs, and prints the CPU seconds each
process used, per request (the load generator excluded). --serve-env overrides a variable of the
config's Serve environment, e.g. RAY_SERVE_THROUGHPUT_OPTIMIZED=0; --log-level replaces the config's
logging_config.log_level (WARNING drops every per-request line); --access-log turns Serve's
access line of one deployment on or off. Needs port 8000 free and no
other Ray instance. --out saves milliseconds of CPU per request by stage, which
`python -m loadtests.capacity` reads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

from loadtests.bench import closed_loop
from loadtests.cpu import cpu_seconds_by_process, cpu_used
from loadtests.service import BASE_URL, deployment_config, running_service, serve_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--serve-env", action="append", default=[], help="KEY=VALUE for Serve's environment")
    parser.add_argument("--log-level", help="the config's logging_config.log_level, e.g. WARNING")
    parser.add_argument("--access-log", action="append", default=[], metavar="DEPLOYMENT=on|off",
                        help="Serve's per-request access line for that deployment")
    parser.add_argument("--out", type=Path, help="write CPU ms per request by stage as JSON")
    parser.add_argument("env", nargs="*", help="ENV=VALUE for the service")
    args = parser.parse_args()
    env = {"ENABLE_MODEL_CACHE": "false", **dict(item.split("=", 1) for item in args.env)}
    config = serve_config(dict(item.split("=", 1) for item in args.serve_env))
    if args.log_level:
        config["logging_config"]["log_level"] = args.log_level
    for item in args.access_log:
        set_access_log(config, item)
    with running_service(env, config=config):
        asyncio.run(closed_loop(BASE_URL, args.connections, 3, 1, 0.0, "warm-up"))
        before, start = cpu_seconds_by_process(), time.monotonic()
        result = asyncio.run(closed_loop(BASE_URL, args.connections, args.duration, 0, 0.0, "profile"))
        after, wall = cpu_seconds_by_process(), time.monotonic() - start
    rows = [(used, command) for used, command in cpu_used(before, after, {os.getpid()}) if used > 0.05]
    total = sum(used for used, _ in rows)
    print(f"{result.rps:.1f} rps, P50 {result.p50_ms:.0f} ms, {result.requests} requests")
    print(f"CPU {total:.1f} s over {wall:.1f} s wall: {total / result.requests * 1000:.0f} ms per request"
          " (load generator excluded)")
    for used, command in rows[:20]:
        print(f"{used:7.2f} s {used / result.requests * 1000:6.1f} ms/request  {command}")
    if args.out:
        stages: dict[str, float] = {}
        for used, command in rows:
            stage = stage_of(command)
            stages[stage] = stages.get(stage, 0.0) + used / result.requests * 1000
        profile = {"rps": result.rps, "connections": args.connections, "cpus": os.cpu_count(),
                   "cpu_ms_per_request": {k: round(v, 2) for k, v in sorted(stages.items(), key=lambda kv: -kv[1])}}
        args.out.write_text(json.dumps(profile, indent=2) + "\n")


def set_access_log(config: dict, item: str) -> None:
    """``item`` is DEPLOYMENT=on|off. A deployment's logging_config replaces the config's, so it
    starts as a copy of it."""
    deployment, _, state = item.partition("=")
    if state not in ("on", "off"):
        raise SystemExit(f"--access-log {item}: expected DEPLOYMENT=on or DEPLOYMENT=off")
    try:
        target = deployment_config(config, deployment)
    except StopIteration:
        raise SystemExit(f"--access-log: no deployment named {deployment!r} in serve_config.yaml") from None
    target["logging_config"] = {**config["logging_config"], **target.get("logging_config", {}),
                                "enable_access_log": state == "on"}


def stage_of(command: str) -> str:
    """The graph's stage a process belongs to: a deployment, Serve's proxy, or Ray itself."""
    if "ServeReplica:" in command:
        return command.split("ServeReplica:", 1)[1].split()[0].rsplit(":", 1)[1]
    return "Proxy" if "ProxyActor" in command else "Ray (controller, daemons)"


if __name__ == "__main__":
    main()
