"""Refusing ciphertexts the relay replays or reorders, exactly as static/js/replay.js does.

The relay cannot read or forge a message, but it can deliver a captured one again, or
attribute it to another member. Every sender (one per connection: a fresh sid each join)
numbers its messages 1, 2, 3, ... inside the ciphertext. A receiver binds each sid to the
member id it first arrived from and accepts only increasing numbers from that member.
Gaps are allowed: a message can be lost when a connection drops.
"""

from __future__ import annotations


class ReplayGuard:
    """The table of senders seen; it lives as long as the receiver does."""

    __slots__ = ("_senders",)

    def __init__(self) -> None:
        self._senders: dict[str, list[int]] = {}

    def accept(self, member_id: int, sid: str, n: int) -> bool:
        """True when the message is new; False when it repeats or precedes one already
        accepted from this sender, or carries a sid first seen from a different member."""
        seen = self._senders.get(sid)
        if seen is None:
            self._senders[sid] = [member_id, n]
            return True
        if seen[0] != member_id or n <= seen[1]:
            return False
        seen[1] = n
        return True
