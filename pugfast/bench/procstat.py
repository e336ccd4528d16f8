"""CPU time and memory of a local process, read from /proc (Linux only).

CPU is utime + stime of every thread, from /proc/PID/stat, in clock ticks (usually 10 ms):
measure over windows of seconds, not milliseconds. RSS is VmRSS from /proc/PID/status.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class ProcSample:
    """One reading of a process: when (monotonic ns), its CPU seconds so far and its RSS."""

    at_ns: int
    cpu_s: float
    rss_bytes: int


def sample(pid: int) -> ProcSample:
    """Read ``pid``'s CPU time and RSS now. Raises OSError if it is gone or not readable."""
    at = time.monotonic_ns()
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # The command name may hold spaces and parentheses: the fields start after the last ')'.
    fields = stat[stat.rindex(b")") + 2:].split()
    # Fields 14 and 15 of the man page (utime, stime) are 12 and 13 after the name.
    cpu = (int(fields[11]) + int(fields[12])) / _TICK
    rss = 0
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                rss = int(line.split()[1]) * 1024
                break
    return ProcSample(at, cpu, rss)


def available(pid: int) -> bool:
    """Whether ``pid``'s CPU and memory can be read here."""
    try:
        sample(pid)
    except (OSError, ValueError, IndexError):
        return False
    return True
