"""Refusing ciphertexts the relay replays or reorders, exactly as static/js/replay.js does.

The relay cannot read or forge a message, but it can deliver a captured one again, or
attribute it to another member. Every sender (one per connection: a fresh sid each join)
numbers its messages 1, 2, 3, ... inside the ciphertext. A receiver binds each sid to the
member id it first arrived from, binds each member id to the first sid it sent (a client
never changes its sid during a connection), and accepts only increasing numbers. Gaps are
allowed: a message can be lost when a connection drops.

The table holds one entry per sender and at most MAX_SENDERS of them (more than the largest
room a relay allows, 10,000 members), forgetting the sender heard from least recently when a
new one would pass the bound. So a member that changes its sid with every message grows
nothing (those messages are refused: its member id keeps its first sid), and a relay that
invents member ids cannot grow it past the bound either. The replay window is therefore the
last MAX_SENDERS senders heard from: within it every replay, re-attribution and reordering is
refused; a sender forgotten since could have an old message of its own replayed once, showing
its old ``ts``.
"""

from __future__ import annotations

from collections import OrderedDict

MAX_SENDERS = 16384


class ReplayGuard:
    """The table of senders heard from, bounded by ``limit`` entries."""

    __slots__ = ("_by_member", "_limit", "_senders")

    def __init__(self, limit: int = MAX_SENDERS) -> None:
        self._limit = limit
        # sid -> [member id, highest n], least recently heard from first.
        self._senders: OrderedDict[str, list[int]] = OrderedDict()
        self._by_member: dict[int, str] = {}

    def __len__(self) -> int:
        """How many senders the table holds now."""
        return len(self._senders)

    def accept(self, member_id: int, sid: str, n: int) -> bool:
        """True when the message is new; False when it repeats or precedes one already
        accepted from this sender, carries a sid first seen from a different member, or comes
        from a member that sent another sid before."""
        seen = self._senders.get(sid)
        if seen is None:
            if member_id in self._by_member:
                return False
            self._senders[sid] = [member_id, n]
            self._by_member[member_id] = sid
            if len(self._senders) > self._limit:
                _, (forgotten, _) = self._senders.popitem(last=False)
                del self._by_member[forgotten]
            return True
        if seen[0] != member_id or n <= seen[1]:
            return False
        seen[1] = n
        self._senders.move_to_end(sid)
        return True
