"""A periodic tick on the event loop, on time to a few tens of microseconds where Linux allows.

The open loop's schedule is a 1 ms grid, and a tick that fires late delays every message of
its millisecond: that delay is counted (as the generator's lag, and in the latency), but it
should be the generator's real slowness, not its timer's. The event loop's own timers are too
coarse for that: uvloop's (libuv's) count whole milliseconds and fire up to a millisecond early
or late, the standard loop's round its waits up to the next millisecond. On Linux a timerfd
(CLOCK_MONOTONIC, absolute, periodic) wakes the loop through its file descriptor within tens of
microseconds of each tick; it comes from ``os.timerfd_create`` (Python 3.13 on) or libc through
ctypes. Elsewhere the tick falls back to ``loop.call_at``, and ``precise`` says so.

The callback gets the time it runs (monotonic ns); however many ticks a pause skipped, it runs
once, and works out from the time what it owes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import struct
import sys
import time
from collections.abc import Callable

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = getattr(os, "O_CLOEXEC", 0o2000000)
_TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


def _libc_timerfd(first_ns: int, period_ns: int) -> int | None:
    """A timerfd through libc, or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        create, settime = libc.timerfd_create, libc.timerfd_settime
    except (OSError, AttributeError):
        return None
    fd = create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
    if fd < 0:
        return None
    spec = _Itimerspec(_Timespec(*divmod(period_ns, 10**9)), _Timespec(*divmod(first_ns, 10**9)))
    if settime(fd, _TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
        os.close(fd)
        return None
    return int(fd)


def _timerfd(first_ns: int, period_ns: int) -> int | None:
    """A non-blocking timerfd that expires at ``first_ns`` (CLOCK_MONOTONIC) and every
    ``period_ns`` after, or None where Linux's timerfd is not to be had."""
    create = getattr(os, "timerfd_create", None)
    if create is None:
        return _libc_timerfd(first_ns, period_ns)
    fd = create(time.CLOCK_MONOTONIC, flags=os.TFD_NONBLOCK | os.TFD_CLOEXEC)  # type: ignore[attr-defined]
    os.timerfd_settime_ns(fd, flags=os.TFD_TIMER_ABSTIME,  # type: ignore[attr-defined]
                          initial=first_ns, interval=period_ns)
    return int(fd)


class Ticker:
    """Calls ``callback(now_ns)`` at ``first_ns`` and every ``period_ns`` after (monotonic
    nanoseconds), until ``stop()``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, first_ns: int, period_ns: int,
                 callback: Callable[[int], None]) -> None:
        self.loop = loop
        self.period = period_ns
        self.callback = callback
        self.next_ns = first_ns
        self.handle: asyncio.TimerHandle | None = None
        self.fd = _timerfd(first_ns, period_ns)
        self.precise = self.fd is not None
        if self.fd is not None:
            loop.add_reader(self.fd, self._expired)
        else:
            self._arm()

    def _expired(self) -> None:
        assert self.fd is not None
        try:
            struct.unpack("=Q", os.read(self.fd, 8))
        except BlockingIOError:
            return
        self.callback(time.monotonic_ns())

    def _arm(self) -> None:
        delay = (self.next_ns - time.monotonic_ns()) / 1e9
        self.handle = self.loop.call_at(self.loop.time() + max(0.0, delay), self._fired)

    def _fired(self) -> None:
        now = time.monotonic_ns()
        if now < self.next_ns:  # early, as libuv's millisecond timers can be
            self._arm()
            return
        self.next_ns += ((now - self.next_ns) // self.period + 1) * self.period
        self._arm()
        self.callback(now)

    def stop(self) -> None:
        if self.fd is not None:
            self.loop.remove_reader(self.fd)
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
