"""CPU time of processes, from /proc: what a request costs a service in all its processes, and in
which part of the service."""

from __future__ import annotations

import os
from dataclasses import dataclass

# Ray's name of a process, as its command line shows it, and the part of the service it is;
# Serve's replicas name their deployment.
PROCESS_PARTS = (
    ("HAProxyManager", "HAProxy's manager"),
    ("ProxyActor", "Serve's proxy"),
    ("one_process_server", "one-process server"),
)
HAPROXY = "HAProxy"
RAY = "Ray (controller, daemons, serve run)"


@dataclass(frozen=True)
class Process:
    command: str
    parent: str
    cpu_s: float  # user + system CPU seconds so far


def processes() -> dict[str, Process]:
    """Every process on this machine, by pid."""
    result = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace")[:100]
        except OSError:  # it ended
            continue
        result[pid] = Process(command, fields[1], (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    return result


def family(readings: dict[str, Process], root: int) -> set[str]:
    """``root`` and every process it started, and they started: all of a service's processes."""
    members, grew = {str(root)}, True
    while grew:
        children = {pid for pid, p in readings.items() if p.parent in members} - members
        members |= children
        grew = bool(children)
    return members


def cpu_used(before: dict[str, Process], after: dict[str, Process]) -> dict[str, float]:
    """CPU seconds each process used between two readings, for those alive at both."""
    return {pid: p.cpu_s - before[pid].cpu_s for pid, p in after.items() if pid in before}


def part_of(command: str) -> str:
    """The part of the service a process is: a deployment, a front door, or Ray's own."""
    if "ServeReplica:" in command:
        # "ServeReplica:<app>:<deployment>", with ".<method>" while Ray runs one of its methods
        return command.split("ServeReplica:", 1)[1].split()[0].rsplit(":", 1)[1].split(".")[0]
    if os.path.basename(command.split(" ", 1)[0]) == "haproxy":
        return HAPROXY
    return next((part for name, part in PROCESS_PARTS if name in command), RAY)
