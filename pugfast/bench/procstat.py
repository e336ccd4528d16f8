"""CPU time and memory of a local process and its children, read from /proc (Linux only).

CPU comes from /proc/PID/task/TID/schedstat, whose first field is the time each thread has run,
in nanoseconds, summed over the process's threads (a thread that ends counts with its last
reading): fine enough for the CPU of a few hundred joins. Where a kernel has no schedstat, it
comes from utime + stime in /proc/PID/stat, in clock ticks (usually 10 ms), and
``CpuClock.resolution_s`` says so: measure over windows of seconds then. RSS is VmRSS from
/proc/PID/status. A relay run with ``--workers`` is a supervisor and its worker processes: a
sample adds up the process and every live descendant, and keeps the process's own CPU apart (the
supervisor's routing cost).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class ProcSample:
    """One reading of a process tree: when (monotonic ns), the CPU seconds so far and RSS of
    the process and its descendants, how many processes that is, and the CPU seconds of the
    process alone."""

    at_ns: int
    cpu_s: float
    rss_bytes: int
    processes: int = 1
    own_cpu_s: float = 0.0


@dataclass(frozen=True)
class CpuClock:
    """Where CPU times come from: ``schedstat`` (nanoseconds) or ``stat`` (clock ticks)."""

    name: str
    resolution_s: float


SCHEDSTAT = CpuClock("schedstat", 1e-9)
TICKS = CpuClock("stat", 1 / _TICK)


def clock(pid: int) -> CpuClock:
    """The finest CPU clock /proc offers for ``pid``."""
    try:
        _schedstat_cpu(pid)
    except (OSError, ValueError, IndexError):
        return TICKS
    return SCHEDSTAT


def sample(pid: int, cpu_clock: CpuClock = TICKS) -> ProcSample:
    """Read the CPU time and RSS of ``pid`` and its descendants now. Raises OSError if ``pid``
    is gone or not readable (a descendant that ends meanwhile is left out)."""
    at = time.monotonic_ns()
    own_cpu, own_rss = _read(pid, cpu_clock)
    cpu, rss, count = own_cpu, own_rss, 1
    for child in _descendants(pid):
        try:
            child_cpu, child_rss = _read(child, cpu_clock)
        except (OSError, ValueError, IndexError):
            continue
        cpu, rss, count = cpu + child_cpu, rss + child_rss, count + 1
    return ProcSample(at, cpu, rss, count, own_cpu)


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{parent}/task/{task}/children", "rb") as f:
                    children = [int(c) for c in f.read().split()]
            except OSError:
                continue
            found += children
            pending += children
    return found


# Per process: each thread's run time at the last reading, and the run time of threads that
# have ended since the first one (an ended thread leaves /proc/PID/task, but its time was
# spent: the sum keeps its last reading, so it never goes backwards).
_threads: dict[int, dict[str, int]] = {}
_ended: dict[int, int] = {}


def _schedstat_cpu(pid: int) -> float:
    live: dict[str, int] = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat", "rb") as f:
                live[task] = int(f.read().split()[0])
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
    ended = _ended.get(pid, 0)
    for task, ns in _threads.get(pid, {}).items():
        if live.get(task, -1) < ns:  # gone, or its id taken by a new thread
            ended += ns
    _threads[pid], _ended[pid] = live, ended
    return (ended + sum(live.values())) / 1e9


def _read(pid: int, cpu_clock: CpuClock) -> tuple[float, int]:
    if cpu_clock is SCHEDSTAT:
        cpu = _schedstat_cpu(pid)
    else:
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
    return cpu, rss
