"""Liveness by deadline: the join timeout, pings and the idle timeout, with no pass over
every connection.

A relay is mostly idle members, and what they need of it is rare and predictable: a ping after
``ping_interval`` of silence, a close after ``idle_timeout``, and for one that never joins, a
close after ``join_timeout``. So each connection is filed in a timer wheel under the next
moment it needs looking at, and a sweep looks only at the slot whose moment has come:

- A new connection is filed at its join deadline (or its first ping, if that comes sooner).
  If it has joined by then it is filed again for its first ping; if not, it is closed
  (4408).
- A member looked at is pinged if it has been silent for ``ping_interval`` and not pinged for
  as long; closed (1001) if it has been silent for ``idle_timeout``; and filed again under the
  sooner of its idle deadline and its next ping. Activity costs the hot path nothing but the
  time stamp the engine keeps (``last_activity``): a member that spoke meanwhile is simply
  filed further on when its moment comes.
- Members who fell silent together would all be pinged in one moment, thousands in one loop
  iteration. So each next ping is filed up to a quarter of ``ping_interval`` later, at random
  (a quiet member is pinged after 20 to 25 s of silence by default), and a sweep looks at no
  more than ``limit`` connections at a time: the rest wait for the next loop iteration, so no
  iteration does more than a bounded slice of this work.

The wheel has one slot per tick over the longest interval, each a dict (insertion and removal
in O(1)); a connection's slot is kept on its session (``due_slot``) so that its end removes it.
Nothing here imports asyncio: time comes in as ``now``, and the caller owns the timer.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

CLOSE_GOING_AWAY = 1001
CLOSE_JOIN_TIMEOUT = 4408
# A next ping is filed up to this fraction of the ping interval later (see above).
PING_SPREAD = 0.25
# How many connections a sweep looks at in one loop iteration: at a few microseconds each,
# and a write for each one pinged, well under a millisecond.
SLICE = 64


class Wheel:
    """Items filed under a due time, each found again in the sweep of that time's tick, or of
    the next tick if it is filed late: never before."""

    __slots__ = ("_cursor", "_slots", "tick")

    def __init__(self, tick: float, horizon: float, now: float) -> None:
        self.tick = tick
        self._slots: list[dict[Any, None]] = [{} for _ in range(int(horizon / tick) + 3)]
        # The first tick whose slot has not been swept whole.
        self._cursor = self.index(now)

    def index(self, moment: float) -> int:
        """The tick ``moment`` falls in."""
        return math.floor(moment / self.tick)

    def file(self, item: Any, due: float) -> int:
        """File ``item`` under ``due``; return its slot (for ``remove``). Past the wheel's
        horizon (a sweep fallen far behind), it is filed at the horizon, to be looked at early
        and filed again."""
        index = max(self.index(due) + 1, self._cursor)
        index = min(index, self._cursor + len(self._slots) - 1)
        slot = index % len(self._slots)
        self._slots[slot][item] = None
        return slot

    def remove(self, item: Any, slot: int) -> None:
        self._slots[slot].pop(item, None)

    def take(self, now: float, limit: int) -> list[Any]:
        """Up to ``limit`` items whose tick has passed by ``now``, each taken out."""
        taken: list[Any] = []
        last = self.index(now)
        slots = self._slots
        while self._cursor <= last:
            slot = slots[self._cursor % len(slots)]
            while slot:
                if len(taken) == limit:
                    return taken
                taken.append(slot.popitem()[0])
            self._cursor += 1
        return taken

    def __len__(self) -> int:
        return sum(map(len, self._slots))


class Liveness:
    """The liveness of every connection of one relay. ``add`` each new connection, ``remove``
    it once gone, and ``sweep`` every ``tick`` seconds (and again at once while it returns
    True, which means it stopped at its limit with more due).

    A connection is the engine's ``Connection`` (``opened_at``, ``last_activity``, ``closing``,
    ``close``, ``ping``) whose session has ``member``, ``pinged_at`` and ``due_slot``.
    """

    __slots__ = ("_spread", "idle_timeout", "join_timeout", "limit", "ping_interval", "tick",
                 "visits", "wheel")

    def __init__(
        self,
        join_timeout: float,
        ping_interval: float,
        idle_timeout: float,
        now: float,
        *,
        limit: int = SLICE,
        spread: Callable[[], float] = random.random,
    ) -> None:
        self.join_timeout = join_timeout
        self.ping_interval = ping_interval
        self.idle_timeout = idle_timeout
        self.limit = limit
        self._spread = spread
        # A deadline is noticed at most a tick late.
        self.tick = max(0.02, min(1.0, join_timeout / 4, ping_interval / 4))
        horizon = max(join_timeout, idle_timeout, ping_interval * (1 + PING_SPREAD))
        self.wheel = Wheel(self.tick, horizon, now)
        # Connections looked at, for tests and curious operators.
        self.visits = 0

    def add(self, conn: Any) -> None:
        """A new connection: filed at its join deadline, or its first ping if sooner."""
        first = min(self.join_timeout, self.ping_interval)
        conn.session.due_slot = self.wheel.file(conn, conn.opened_at + first)

    def remove(self, conn: Any) -> None:
        """The connection is gone."""
        session = conn.session
        if session.due_slot >= 0:
            self.wheel.remove(conn, session.due_slot)
            session.due_slot = -1

    def next_sweep(self, now: float) -> float:
        """When the next sweep should run: the start of the next tick, when a slot's moment
        comes (so a deadline is met within a tick of it)."""
        index = self.wheel.index(now) + 1
        while index * self.tick <= now:  # where rounding put ``now`` on a tick's edge
            index += 1
        return index * self.tick

    def sweep(self, now: float) -> bool:
        """Look at up to ``limit`` connections whose moment has come; True if more are due."""
        due = self.wheel.take(now, self.limit)
        self.visits += len(due)
        for conn in due:
            self._look_at(conn, now)
        return len(due) == self.limit

    def _look_at(self, conn: Any, now: float) -> None:
        session = conn.session
        session.due_slot = -1
        if conn.closing:
            return  # its close is under way, with a deadline of its own
        if session.member is None:
            deadline = conn.opened_at + self.join_timeout
            if now >= deadline:
                conn.close(CLOSE_JOIN_TIMEOUT, "no join in time")
            else:
                session.due_slot = self.wheel.file(conn, deadline)
            return
        heard = conn.last_activity
        if now - heard >= self.idle_timeout:
            conn.close(CLOSE_GOING_AWAY, "idle timeout")
            return
        interval = self.ping_interval
        if now - heard >= interval and now - session.pinged_at >= interval:
            session.pinged_at = now
            conn.ping()
        next_ping = max(heard, session.pinged_at) + interval * (1 + PING_SPREAD * self._spread())
        session.due_slot = self.wheel.file(conn, min(heard + self.idle_timeout, next_ping))
