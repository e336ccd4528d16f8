"""Relay-wide caps (``--max-rooms``, ``--max-connections``) shared out between workers.

With ``--workers N`` the caps are the relay's, not each worker's: a room lives in one worker,
so a cap split evenly would refuse a room's second member while the relay as a whole has room
to spare. Instead the supervisor keeps the cap in a ``Ledger`` and hands each worker an
``Allowance`` in blocks: a worker admits against its allowance without asking anyone, and asks
for another block only when it has used its own. A block is small next to the cap (at most an
eighth of it per worker), so nearly every join is decided locally.

Exactness at the cap: when the ledger has nothing left to grant, the supervisor first takes
back every slot a worker holds and does not use (``Allowance.give_back``), then grants from
that. So the relay admits exactly ``cap`` rooms or connections, wherever they land, and pays a
round trip per admission only while it is full or nearly so.

A single relay uses an ``Allowance`` as large as the cap and never asks.

Nothing here does I/O: the supervisor and the worker link carry the numbers.
"""

from __future__ import annotations

from collections.abc import Callable

ROOMS = "r"
CONNECTIONS = "c"
KINDS = (ROOMS, CONNECTIONS)
# The largest block a worker is granted at once: enough that a join storm asks rarely.
MAX_BLOCK = 256


def block_size(cap: int, workers: int) -> int:
    """Slots granted per request: at most an eighth of a worker's even share, at least one."""
    return max(1, min(MAX_BLOCK, cap // (8 * workers)))


class Allowance:
    """A worker's share of one cap: ``limit`` slots, of which ``used()`` are taken and
    ``reserved`` promised to admissions still under way (a room being created while its
    token is checked elsewhere, say)."""

    __slots__ = ("_used", "kind", "limit", "reserved")

    def __init__(self, kind: str, limit: int, used: Callable[[], int]) -> None:
        self.kind = kind
        self.limit = limit
        self.reserved = 0
        self._used = used

    def available(self) -> bool:
        """Whether one more can be admitted without asking for more."""
        return self._used() + self.reserved < self.limit

    def give_back(self) -> int:
        """Give up every slot neither used nor reserved; return how many."""
        spare = max(0, self.limit - self._used() - self.reserved)
        self.limit -= spare
        return spare


class Ledger:
    """The supervisor's account of one cap: how much each worker holds, and what is free."""

    __slots__ = ("block", "cap", "held")

    def __init__(self, cap: int, workers: int) -> None:
        self.cap = cap
        self.block = block_size(cap, workers)
        self.held = [0] * workers

    @property
    def free(self) -> int:
        return self.cap - sum(self.held)

    def grant(self, worker: int) -> int:
        """Hand ``worker`` up to one block; return how many slots (0 when none are free)."""
        granted = min(self.block, self.free)
        self.held[worker] += granted
        return granted

    def returned(self, worker: int, count: int) -> None:
        """``worker`` gave back ``count`` slots."""
        self.held[worker] = max(0, self.held[worker] - count)

    def forget(self, worker: int) -> None:
        """``worker`` ended: whatever it held is free again."""
        self.held[worker] = 0
