"""Proof-of-work challenges for room creation (docs/protocol.md §3), with no I/O and no clock.

A token is ``<deadline>.<random>.<mac>``: the deadline in milliseconds on the issuer's own
monotonic timeline, 12 random bytes, and an HMAC-SHA-256 of both under a key made in memory
when the issuer is created. The server stores nothing per challenge; it remembers a token only
once a room was created with it (so it cannot be replayed), and forgets it when it expires.
A restart makes a new key, which invalidates every outstanding token.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import re
import secrets
from typing import TypeGuard

TOKEN_LIFETIME = 120.0
_NONCE = re.compile(r"0|[1-9][0-9]{0,19}")


class ChallengeError(Exception):
    """A challenge answer was refused. ``status`` and ``code`` are the HTTP error to send."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def b64u(data: bytes) -> str:
    """Base64url without padding (RFC 4648 §5)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def leading_zero_bits(digest: bytes) -> int:
    """How many bits of ``digest``, from the most significant bit of its first byte, are 0."""
    value = int.from_bytes(digest, "big")
    return len(digest) * 8 - value.bit_length()


def solves(token: str, nonce: str, difficulty: int) -> bool:
    """Whether SHA-256 of ``token:nonce`` starts with at least ``difficulty`` zero bits."""
    digest = hashlib.sha256(f"{token}:{nonce}".encode("ascii")).digest()
    return leading_zero_bits(digest) >= difficulty


def solve(token: str, difficulty: int) -> str:
    """Find a nonce for ``token`` by brute force (for clients written in Python)."""
    prefix = hashlib.sha256(f"{token}:".encode("ascii"))
    nonce = 0
    while True:
        attempt = prefix.copy()
        text = str(nonce)
        attempt.update(text.encode("ascii"))
        if leading_zero_bits(attempt.digest()) >= difficulty:
            return text
        nonce += 1


def token_deadline(token: str) -> float:
    """The monotonic time an authentic token expires at (its first field, in milliseconds)."""
    return int(token.partition(".")[0]) / 1000


class SpentTokens:
    """Tokens already used to create a room, each remembered until it expires.

    One lives in every relay; with ``--workers`` the supervisor holds the only one, since a
    challenge and its answer may reach different workers.
    """

    def __init__(self) -> None:
        self._deadlines: dict[str, float] = {}
        self._expiries: list[tuple[float, str]] = []

    def __contains__(self, token: str) -> bool:
        return token in self._deadlines

    def __len__(self) -> int:
        return len(self._deadlines)

    def add(self, token: str, now: float) -> bool:
        """Remember an authentic ``token``; False if it was already spent."""
        self.forget_expired(now)
        if token in self._deadlines:
            return False
        deadline = token_deadline(token)
        self._deadlines[token] = deadline
        heapq.heappush(self._expiries, (deadline, token))
        return True

    def forget_expired(self, now: float) -> None:
        expiries = self._expiries
        while expiries and expiries[0][0] <= now:
            del self._deadlines[heapq.heappop(expiries)[1]]


class ChallengeIssuer:
    """Issues and checks challenge tokens. Every method takes the monotonic time ``now``.

    ``key`` is the HMAC key; by default a new one. Workers of one relay share theirs, so a
    token issued by one is good at another.
    """

    def __init__(self, difficulty: int, lifetime: float = TOKEN_LIFETIME, key: bytes | None = None) -> None:
        self.difficulty = difficulty
        self.lifetime = lifetime
        self._key = key if key is not None else secrets.token_bytes(32)
        self.spent = SpentTokens()

    def _mac(self, body: str) -> str:
        return b64u(hmac.new(self._key, body.encode("ascii"), hashlib.sha256).digest()[:18])

    def issue(self, now: float) -> tuple[str, float]:
        """A new token and the monotonic time it expires at."""
        deadline_ms = int((now + self.lifetime) * 1000)
        body = f"{deadline_ms}.{b64u(secrets.token_bytes(12))}"
        return f"{body}.{self._mac(body)}", deadline_ms / 1000

    def check(self, token: str, nonce: str, now: float) -> None:
        """Check an answer, in the order docs/protocol.md §4.1 gives, without spending the token.

        Raises ChallengeError: 403 ``bad_proof`` for a token this issuer did not make or a nonce
        that does not meet the difficulty, 410 ``challenge_expired``, 409 ``challenge_used``.
        The caller has already checked that ``nonce`` is well formed (``valid_nonce``).
        """
        self.check_token(token, now)
        self.check_proof(token, nonce)

    def check_token(self, token: str, now: float) -> None:
        """The first three checks of ``check``: authentic, unexpired, not spent here.

        A worker of ``--workers N`` asks the supervisor whether the token was spent at another
        worker between this and ``check_proof``, so the order holds across workers too.
        """
        body, _, mac = token.rpartition(".")
        deadline_text = body.partition(".")[0]
        if not (mac and deadline_text.isdigit()) or not hmac.compare_digest(
            mac.encode("ascii"), self._mac(body).encode("ascii")
        ):
            raise ChallengeError(403, "bad_proof", "this challenge token was not issued here")
        if now >= int(deadline_text) / 1000:
            raise ChallengeError(410, "challenge_expired", "the challenge expired: ask for a new one")
        self.spent.forget_expired(now)
        if token in self.spent:
            raise ChallengeError(409, "challenge_used", "this challenge was already used")

    def check_proof(self, token: str, nonce: str) -> None:
        """The last check of ``check``: ``nonce`` solves ``token``."""
        if not solves(token, nonce, self.difficulty):
            raise ChallengeError(403, "bad_proof", "the nonce does not solve the challenge")

    def spend(self, token: str, now: float) -> None:
        """Remember ``token`` as used until it expires. Call after a successful create."""
        self.spent.add(token, now)

    @property
    def spent_count(self) -> int:
        return len(self.spent)


def valid_nonce(nonce: object) -> TypeGuard[str]:
    """A decimal integer string of 1 to 20 digits with no leading zero (``"0"`` itself is fine)."""
    return isinstance(nonce, str) and _NONCE.fullmatch(nonce) is not None


def valid_token_text(token: object) -> TypeGuard[str]:
    """Printable ASCII of at most 256 characters: the shape every token has."""
    return isinstance(token, str) and 0 < len(token) <= 256 and token.isascii() and token.isprintable()
