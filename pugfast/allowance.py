"""Relay-wide caps (``--max-rooms``, ``--max-connections``) shared out between workers.

With ``--workers N`` the caps are the relay's, not each worker's: a room lives in one worker,
so a cap split evenly would refuse a room's second member while the relay as a whole has room
to spare. Instead the supervisor keeps the cap in a ``Ledger`` and hands each worker an
``Allowance`` in blocks: a worker admits against its allowance without asking anyone, and asks
for another block only when it has used its own. A block is small next to the cap (at most an
eighth of it per worker), so nearly every join is decided locally.

A burst of joins must not drain the ledger: a worker keeps one request for more in flight per
cap, however many admissions wait on it, and asks for as many slots as are waiting (at least
a block). The waiting admissions share the answer in the order they came (pugfast.gateway).

Exactness at the cap: when the ledger has nothing left to grant, the supervisor's
``CapBroker`` first takes back every slot the other workers hold and do not use
(``Allowance.give_back``), then grants from that. So the relay admits exactly ``cap`` rooms or
connections, wherever they land, and pays a round trip per admission only while it is full or
nearly so.

A single relay uses an ``Allowance`` as large as the cap and never asks.

Nothing here does I/O: the supervisor and the worker link carry the numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

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

    def grant(self, worker: int, need: int = 0) -> int:
        """Hand ``worker`` up to ``need`` slots, and at least up to one block; return how many
        (0 when none are free)."""
        granted = min(max(self.block, need), self.free)
        self.held[worker] += granted
        return granted

    def returned(self, worker: int, count: int) -> None:
        """``worker`` gave back ``count`` slots."""
        self.held[worker] = max(0, self.held[worker] - count)

    def forget(self, worker: int) -> None:
        """``worker`` ended: whatever it held is free again."""
        self.held[worker] = 0


class CapBroker:
    """The supervisor's side of one cap: it grants slots to the workers that ask, and when none
    are free it first takes back what the other workers hold and do not use.

    It does no I/O: it answers through ``grant(worker, request, count)`` and asks a worker to
    give back its unused slots through ``ask_back(worker)``. A give-back round ends when every
    worker asked has answered (``given_back``), or when the caller's timer calls
    ``end_round``: ``acquire`` returns the round's number when it starts one, so that a late
    timer ends no later round.
    """

    def __init__(
        self,
        cap: int,
        workers: int,
        grant: Callable[[int, int, int], None],
        ask_back: Callable[[int], None],
    ) -> None:
        self.ledger = Ledger(cap, workers)
        self._grant = grant
        self._ask_back = ask_back
        self._round = 0
        # The workers asked to give back slots in this round and not yet answered, and the
        # requests (worker, request id, slots needed) that wait for the round's end.
        self._asked: set[int] = set()
        self._waiting: list[tuple[int, int, int]] = []

    def acquire(self, worker: int, request: int, need: int, others: Iterable[int]) -> int | None:
        """``worker`` asks for ``need`` more slots (``others``: the workers that could give
        some back). Return the number of the give-back round this starts, if it starts one."""
        if self._asked:
            self._waiting.append((worker, request, need))
            return None
        if self.ledger.free:
            self._grant(worker, request, self.ledger.grant(worker, need))
            return None
        asked = {other for other in others if other != worker}
        if not asked:
            self._grant(worker, request, 0)
            return None
        self._round += 1
        self._asked = asked
        self._waiting.append((worker, request, need))
        for other in asked:
            self._ask_back(other)
        return self._round

    def given_back(self, worker: int, count: int) -> None:
        """``worker`` gave back ``count`` slots (answering a round, or on its own)."""
        self.ledger.returned(worker, count)
        if worker in self._asked:
            self._asked.discard(worker)
            if not self._asked:
                self.end_round()

    def end_round(self, number: int | None = None) -> None:
        """Answer every waiting request from what is free now (``number``: only if that round
        is still the one under way)."""
        if number is not None and (number != self._round or not self._asked):
            return
        self._asked = set()
        waiting, self._waiting = self._waiting, []
        for worker, request, need in waiting:
            self._grant(worker, request, self.ledger.grant(worker, need))

    def lost(self, worker: int) -> None:
        """``worker`` can no longer be asked or answered: its requests are void, and a round
        does not wait for it. What it holds stays counted until it has ended (``forget``)."""
        self._waiting = [entry for entry in self._waiting if entry[0] != worker]
        self.given_back(worker, 0)

    def forget(self, worker: int) -> None:
        """``worker`` ended: what it held is free again."""
        self.ledger.forget(worker)
