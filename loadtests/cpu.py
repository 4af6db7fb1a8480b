"""CPU seconds used by every process on this machine, from /proc: what a request costs in all."""

from __future__ import annotations

import os


def cpu_seconds_by_process() -> dict[str, tuple[str, float]]:
    """pid -> (command line, user + system CPU seconds so far)."""
    ticks = os.sysconf("SC_CLK_TCK")
    result = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace")[:80]
        except OSError:
            continue
        result[pid] = (command, (int(fields[11]) + int(fields[12])) / ticks)
    return result


def cpu_used(before: dict[str, tuple[str, float]], after: dict[str, tuple[str, float]],
             exclude_pids: set[int] = frozenset()) -> list[tuple[float, str]]:
    """(CPU seconds, command) per process between two readings, most first; the load generator's
    own process is excluded by pid."""
    rows = [
        (cpu - before[pid][1], command) for pid, (command, cpu) in after.items()
        if pid in before and int(pid) not in exclude_pids
    ]
    return sorted((row for row in rows if row[0] > 0), reverse=True)
