"""Proof-of-work tokens without a server: shape, authenticity, expiry, single use, difficulty."""

from __future__ import annotations

import hashlib

import pytest

from pugfast.pow import (
    ChallengeError,
    ChallengeIssuer,
    leading_zero_bits,
    solve,
    solves,
    valid_nonce,
)


@pytest.mark.parametrize(
    ("digest", "bits"),
    [(b"\x80" + bytes(31), 0), (b"\x01" + bytes(31), 7), (b"\x00\x00\x3f" + bytes(29), 18),
     (bytes(32), 256), (b"\x00\x40" + bytes(30), 9)],
)
def test_leading_zero_bits_counts_from_the_first_byte_msb(digest: bytes, bits: int) -> None:
    assert leading_zero_bits(digest) == bits


def test_solve_finds_a_nonce_that_meets_the_difficulty() -> None:
    nonce = solve("token", 10)
    digest = hashlib.sha256(f"token:{nonce}".encode()).digest()
    assert digest[0] == 0 and digest[1] < 0x40
    assert solves("token", nonce, 10)
    assert valid_nonce(nonce)


@pytest.mark.parametrize("nonce", ["0", "7", "12345678901234567890"])
def test_valid_nonces(nonce: str) -> None:
    assert valid_nonce(nonce)


@pytest.mark.parametrize(
    "nonce", ["", "01", "00", "-1", "1.0", " 1", "123456789012345678901", 5, None, "\u0661"]
)
def test_invalid_nonces(nonce: object) -> None:
    assert not valid_nonce(nonce)


def test_tokens_are_printable_ascii_and_single_use_until_they_expire() -> None:
    issuer = ChallengeIssuer(difficulty=0, lifetime=10)
    token, expires = issuer.issue(now=100.0)
    assert expires == pytest.approx(110.0)
    assert token.isascii() and token.isprintable() and len(token) <= 256
    issuer.check(token, "0", now=101.0)
    issuer.spend(token, now=101.0)
    with pytest.raises(ChallengeError) as used:
        issuer.check(token, "0", now=102.0)
    assert (used.value.status, used.value.code) == (409, "challenge_used")
    with pytest.raises(ChallengeError) as expired:
        issuer.check(token, "0", now=110.0)
    assert (expired.value.status, expired.value.code) == (410, "challenge_expired")
    # The spent set forgets a token once it has expired, so it cannot grow without bound.
    other, _ = issuer.issue(now=110.0)
    issuer.check(other, "0", now=110.5)
    assert issuer.spent_count == 0


@pytest.mark.parametrize("mutate", [
    lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),
    lambda t: "9" + t,
    lambda t: t.split(".")[0] + ".x." + t.split(".")[2],
    lambda t: "garbage",
])
def test_tampered_tokens_are_not_authentic(mutate) -> None:
    issuer = ChallengeIssuer(difficulty=0)
    token, _ = issuer.issue(now=0.0)
    with pytest.raises(ChallengeError) as info:
        issuer.check(mutate(token), "0", now=1.0)
    assert (info.value.status, info.value.code) == (403, "bad_proof")


def test_another_issuer_rejects_the_token_like_a_restart_does() -> None:
    token, _ = ChallengeIssuer(difficulty=0).issue(now=0.0)
    with pytest.raises(ChallengeError, match="not issued here"):
        ChallengeIssuer(difficulty=0).check(token, "0", now=1.0)


def test_a_wrong_nonce_is_refused_without_spending_the_token() -> None:
    issuer = ChallengeIssuer(difficulty=12)
    token, _ = issuer.issue(now=0.0)
    wrong = next(str(n) for n in range(1000) if not solves(token, str(n), 12))
    with pytest.raises(ChallengeError) as info:
        issuer.check(token, wrong, now=1.0)
    assert (info.value.status, info.value.code) == (403, "bad_proof")
    issuer.check(token, solve(token, 12), now=1.0)
