"""``--max-connections-per-address``: open connections per client address, and nothing more.

Opt-in, for a relay that faces its clients directly (behind a proxy every connection comes
from the proxy). An address is never stored as such: it is counted under a keyed BLAKE2b
hash whose key is made when the relay starts and never leaves the process, so the table
cannot be read back into addresses, nor matched against another relay's or another run's. An
entry is dropped when its address's last connection ends; nothing is logged, and the only
figure kept is the total of refusals.
"""

from __future__ import annotations

import hashlib
import secrets

KEY_BYTES = 16


class AddressCounts:
    """Open connections by keyed address hash, against ``cap`` (0 turns counting off)."""

    __slots__ = ("_counts", "_key", "cap", "refusals")

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.refusals = 0
        self._key = secrets.token_bytes(32)
        self._counts: dict[bytes, int] = {}

    def admit(self, host: str) -> bytes | None:
        """Count one more connection from ``host``; return its key, or None past the cap."""
        key = hashlib.blake2b(host.encode(), key=self._key, digest_size=KEY_BYTES).digest()
        count = self._counts.get(key, 0)
        if count >= self.cap:
            self.refusals += 1
            return None
        self._counts[key] = count + 1
        return key

    def release(self, key: bytes) -> None:
        """A connection counted under ``key`` ended."""
        count = self._counts.pop(key, 0) - 1
        if count > 0:
            self._counts[key] = count

    def __len__(self) -> int:
        return len(self._counts)
