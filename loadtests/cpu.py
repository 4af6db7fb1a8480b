"""CPU seconds used by every process on this machine, from /proc: what a request costs in all."""

from __future__ import annotations

import collections
import os


def cpu_seconds_by_process() -> dict[str, tuple[str, float]]:
    """pid -> (command line, user + system CPU seconds so far)."""
    result = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                seconds = _cpu_seconds(f.read())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace")[:80]
        except OSError:
            continue
        result[pid] = (command, seconds)
    return result


def cpu_seconds_of(pid: str) -> float:
    """One process's user + system CPU seconds so far."""
    with open(f"/proc/{pid}/stat") as f:
        return _cpu_seconds(f.read())


def cpu_seconds_by_thread_name(pid: str) -> collections.Counter:
    """A process's CPU seconds so far, summed over the threads of each name."""
    result: collections.Counter = collections.Counter()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                stat = f.read()
        except OSError:  # the thread ended
            continue
        result[stat[stat.index("(") + 1: stat.rindex(")")]] += _cpu_seconds(stat)
    return result


def _cpu_seconds(stat: str) -> float:
    """User + system CPU seconds from the text of a /proc stat file."""
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_used(before: dict[str, tuple[str, float]], after: dict[str, tuple[str, float]],
             exclude_pids: set[int] = frozenset()) -> list[tuple[float, str]]:
    """(CPU seconds, command) per process between two readings, most first; the load generator's
    own process is excluded by pid."""
    rows = [
        (cpu - before[pid][1], command) for pid, (command, cpu) in after.items()
        if pid in before and int(pid) not in exclude_pids
    ]
    return sorted((row for row in rows if row[0] > 0), reverse=True)
