"""Proof-of-work challenges and room creation over HTTP (docs/protocol.md §3, §4): token shape,
the order of the checks, what spends a token, nonce rules and the clamping of ttl/capacity."""

from __future__ import annotations

import asyncio
import hashlib
import time

import pytest
from protocol_helpers import B64U_22, challenge, create, wait_until
from support import running_relay, running_relay_of

from pugfast.pow import solve, solves

# The order of the checks and what spends a token hold for one relay and for a relay of two
# workers alike, where the token's issuer, the worker that checks it and the supervisor that
# remembers spent tokens are three processes.
WORKERS = pytest.mark.parametrize("workers", [1, 2], ids=["one-process", "two-workers"])


def failing_nonce(token: str, difficulty: int) -> str:
    """The smallest nonce that does not solve ``token``."""
    nonce = 0
    while solves(token, str(nonce), difficulty):
        nonce += 1
    return str(nonce)


def tamper(token: str, index: int) -> str:
    """``token`` with one character changed (to another printable one)."""
    c = token[index]
    return token[:index] + ("A" if c != "A" else "B") + token[index + 1 :]


async def test_challenge_shape() -> None:
    async with running_relay(pow_difficulty=3) as r:
        before = time.time() * 1000
        first, second = await challenge(r), await challenge(r)
        after = time.time() * 1000
        assert set(first) == {"token", "difficulty", "expires"}
        token = first["token"]
        assert isinstance(token, str) and 0 < len(token) <= 256
        assert token.isascii() and token.isprintable()
        assert first["difficulty"] == 3
        assert type(first["expires"]) is int
        assert before + 119_000 <= first["expires"] <= after + 121_000
        assert first["token"] != second["token"]


@WORKERS
async def test_a_token_creates_exactly_one_room(workers: int) -> None:
    async with running_relay_of(workers) as r:
        token = (await challenge(r))["token"]
        status, room = await create(r, {"token": token, "nonce": "0"})
        assert status == 201, room
        status, error = await create(r, {"token": token, "nonce": "0"})
        assert (status, error["error"]) == (409, "challenge_used")
        status, error = await create(r, {"token": token, "nonce": "1"})
        assert (status, error["error"]) == (409, "challenge_used")
        if workers == 1:
            assert len(r.gateway.registry) == 1


async def test_create_answer_shape() -> None:
    async with running_relay() as r:
        token = (await challenge(r))["token"]
        before = time.time() * 1000
        status, room = await create(r, {"token": token, "nonce": "0", "ttl": 600, "capacity": 5})
        after = time.time() * 1000
        assert status == 201, room
        assert set(room) == {"room", "secret", "expires", "ttl", "capacity"}
        assert B64U_22.fullmatch(room["room"]) and B64U_22.fullmatch(room["secret"])
        assert room["room"] != room["secret"]
        assert (room["ttl"], room["capacity"]) == (600, 5)
        assert type(room["expires"]) is int
        assert before + 600_000 - 5 <= room["expires"] <= after + 600_000 + 5


async def test_the_server_keeps_only_the_digest_of_the_secret() -> None:
    async with running_relay() as r:
        room = await r.create_room()
        stored = r.gateway.registry.get(room["room"])
        assert stored.secret_digest == hashlib.sha256(room["secret"].encode()).digest()
        for value in (getattr(stored, name) for name in stored.__slots__):
            assert room["secret"] not in repr(value)


@WORKERS
async def test_check_order_malformed_body_comes_before_the_token(workers: int) -> None:
    async with running_relay_of(workers, pow_difficulty=8) as r:
        token = (await challenge(r))["token"]
        forged = tamper(token, -1)
        # A forged token with a malformed nonce or ttl is a bad request, not a bad proof.
        for body in ({"token": forged, "nonce": "01"}, {"token": forged, "nonce": "0", "ttl": "1"}):
            status, error = await create(r, body)
            assert (status, error["error"]) == (400, "bad_request"), body


@WORKERS
async def test_tampered_tokens_are_bad_proof(workers: int) -> None:
    async with running_relay_of(workers) as r:
        token = (await challenge(r))["token"]
        # Every position matters, the deadline at the front included.
        for index in range(len(token)):
            status, error = await create(r, {"token": tamper(token, index), "nonce": "0"})
            assert (status, error["error"]) == (403, "bad_proof"), index
        for forged in ("x", token + "A", token[:-1], "1." * 100, "9" * 13 + ".AAAA.AAAA"):
            status, error = await create(r, {"token": forged, "nonce": "0"})
            assert (status, error["error"]) == (403, "bad_proof"), forged
        status, _ = await create(r, {"token": token, "nonce": "0"})
        assert status == 201


async def test_expired_token_is_410_and_authenticity_is_checked_first() -> None:
    async with running_relay() as r:
        r.gateway.issuer.lifetime = 0.2
        token = (await challenge(r))["token"]
        await asyncio.sleep(0.3)
        status, error = await create(r, {"token": token, "nonce": "0"})
        assert (status, error["error"]) == (410, "challenge_expired")
        status, error = await create(r, {"token": tamper(token, -1), "nonce": "0"})
        assert (status, error["error"]) == (403, "bad_proof")


async def test_expired_token_is_410_even_with_a_wrong_nonce() -> None:
    async with running_relay(pow_difficulty=8) as r:
        r.gateway.issuer.lifetime = 0.2
        token = (await challenge(r))["token"]
        await asyncio.sleep(0.3)
        status, error = await create(r, {"token": token, "nonce": failing_nonce(token, 8)})
        assert (status, error["error"]) == (410, "challenge_expired")


@WORKERS
async def test_replay_is_checked_before_the_proof(workers: int) -> None:
    async with running_relay_of(workers, pow_difficulty=8) as r:
        token = (await challenge(r))["token"]
        status, _ = await create(r, {"token": token, "nonce": solve(token, 8)})
        assert status == 201
        # With two workers, creations take turns: both workers see the replay.
        for _ in range(2):
            status, error = await create(r, {"token": token, "nonce": failing_nonce(token, 8)})
            assert (status, error["error"]) == (409, "challenge_used")


@WORKERS
async def test_real_proof_of_work_and_a_failed_proof_does_not_spend_the_token(workers: int) -> None:
    async with running_relay_of(workers, pow_difficulty=8) as r:
        answer = await challenge(r)
        assert answer["difficulty"] == 8
        token = answer["token"]
        wrong = failing_nonce(token, 8)
        for _ in range(2):
            status, error = await create(r, {"token": token, "nonce": wrong})
            assert (status, error["error"]) == (403, "bad_proof")
        if workers == 1:
            assert len(r.gateway.registry) == 0
        nonce = solve(token, 8)
        digest = hashlib.sha256(f"{token}:{nonce}".encode()).digest()
        assert digest[0] == 0
        status, room = await create(r, {"token": token, "nonce": nonce})
        assert status == 201, room


@WORKERS
async def test_a_malformed_request_does_not_spend_the_token(workers: int) -> None:
    async with running_relay_of(workers) as r:
        token = (await challenge(r))["token"]
        for extra in ({"ttl": "60"}, {"capacity": 2.0}, {"nonce": "00"}, {"ttl": True}):
            status, _ = await create(r, {"token": token, "nonce": "0", **extra})
            assert status == 400, extra
        status, _ = await create(r, {"token": token, "nonce": "0"})
        assert status == 201


NONCES = [
    ("0", 201),
    ("1", 201),
    ("10", 201),
    ("9" * 20, 201),
    ("1" + "0" * 19, 201),
    ("1" * 21, 400),
    ("00", 400),
    ("01", 400),
    ("0" * 20, 400),
    ("", 400),
    ("-1", 400),
    ("+1", 400),
    (" 1", 400),
    ("1 ", 400),
    ("1.0", 400),
    ("1e3", 400),
    ("0x1", 400),
    ("\u0661\u0662", 400),  # Arabic-Indic digits
    ("\uff11", 400),  # a full-width digit one
    (1, 400),
    (0, 400),
    (None, 400),
    (["1"], 400),
    (True, 400),
]


@pytest.mark.parametrize(("nonce", "status"), NONCES, ids=[repr(n) for n, _ in NONCES])
async def test_nonce_format(nonce: object, status: int) -> None:
    async with running_relay() as r:
        token = (await challenge(r))["token"]
        got, answer = await create(r, {"token": token, "nonce": nonce})
        assert got == status, answer
        if status == 400:
            assert answer["error"] == "bad_request"


async def test_a_missing_nonce_is_400() -> None:
    async with running_relay() as r:
        token = (await challenge(r))["token"]
        status, answer = await create(r, {"token": token})
        assert (status, answer["error"]) == (400, "bad_request")


CLAMPS = [
    ({}, 3600, 8),
    ({"ttl": 600, "capacity": 4}, 600, 4),
    ({"ttl": 1}, 60, 8),
    ({"ttl": 0}, 60, 8),
    ({"ttl": -100}, 60, 8),
    ({"ttl": 60, "capacity": 2}, 60, 2),
    ({"ttl": 86400, "capacity": 64}, 86400, 64),
    ({"ttl": 86401}, 86400, 8),
    ({"ttl": 2**53}, 86400, 8),
    ({"ttl": 10**30}, 86400, 8),  # a JSON integer still, however long
    ({"ttl": -(10**30)}, 60, 8),
    ({"capacity": 1}, 3600, 2),
    ({"capacity": 0}, 3600, 2),
    ({"capacity": -5}, 3600, 2),
    ({"capacity": 65}, 3600, 64),
    ({"capacity": 10**6}, 3600, 64),
    ({"ttl": None, "capacity": None}, 3600, 8),
]


@pytest.mark.parametrize(
    ("fields", "ttl", "capacity"), CLAMPS, ids=[repr(f).replace(" ", "") for f, _, _ in CLAMPS]
)
async def test_ttl_and_capacity_are_clamped(fields: dict[str, int], ttl: int, capacity: int) -> None:
    async with running_relay() as r:
        token = (await challenge(r))["token"]
        body = b'{"token":"%s","nonce":"0"' % token.encode()
        for name, value in fields.items():
            body += b',"%s":%s' % (name.encode(), b"null" if value is None else str(value).encode())
        status, room = await create(r, body + b"}")
        assert status == 201, room
        assert (room["ttl"], room["capacity"]) == (ttl, capacity)
        stored = r.gateway.registry.get(room["room"])
        assert (stored.ttl, stored.capacity) == (ttl, capacity)
        assert abs(room["expires"] - (time.time() * 1000 + ttl * 1000)) < 5000


async def test_max_rooms_answers_503_without_spending_the_token() -> None:
    async with running_relay(max_rooms=1) as r:
        room = await r.create_room()
        token = (await challenge(r))["token"]
        status, error = await create(r, {"token": token, "nonce": "0"})
        assert (status, error["error"]) == (503, "at_capacity")
        assert len(r.gateway.registry) == 1
        # The room ends (its only member leaves) and the refused token now works.
        client, _ = await r.member(room)
        await client.close()
        await wait_until(lambda: len(r.gateway.registry) == 0)
        status, answer = await create(r, {"token": token, "nonce": "0"})
        assert status == 201, answer


async def test_a_restarted_relay_refuses_the_old_tokens() -> None:
    async with running_relay() as first:
        token = (await challenge(first))["token"]
    async with running_relay() as second:
        status, error = await create(second, {"token": token, "nonce": "0"})
        assert (status, error["error"]) == (403, "bad_proof")
        status, _ = await create(second, {"token": (await challenge(second))["token"], "nonce": "0"})
        assert status == 201


async def test_unknown_fields_in_a_create_are_ignored() -> None:
    async with running_relay() as r:
        token = (await challenge(r))["token"]
        status, room = await create(
            r, {"token": token, "nonce": "0", "room": "A" * 22, "secret": "B" * 22, "x": [1]}
        )
        assert status == 201, room
        assert room["room"] != "A" * 22 and room["secret"] != "B" * 22


def nonce_with_exactly(token: str, bits: int) -> str:
    """A nonce whose digest starts with exactly ``bits`` zero bits."""
    nonce = 0
    while True:
        digest = hashlib.sha256(f"{token}:{nonce}".encode()).digest()
        value = int.from_bytes(digest, "big")
        if 256 - value.bit_length() == bits:
            return str(nonce)
        nonce += 1


@pytest.mark.parametrize("difficulty", [1, 5, 8, 11])
async def test_zero_bits_are_counted_from_the_most_significant_bit(difficulty: int) -> None:
    async with running_relay(pow_difficulty=difficulty) as r:
        token = (await challenge(r))["token"]
        status, error = await create(r, {"token": token, "nonce": nonce_with_exactly(token, difficulty - 1)})
        assert (status, error["error"]) == (403, "bad_proof")
        status, room = await create(r, {"token": token, "nonce": nonce_with_exactly(token, difficulty)})
        assert status == 201, room


@WORKERS
async def test_simultaneous_creates_with_one_token_make_one_room(workers: int) -> None:
    async with running_relay_of(workers) as r:
        token = (await challenge(r))["token"]
        results = await asyncio.gather(*(create(r, {"token": token, "nonce": "0"}) for _ in range(8)))
        assert sorted(status for status, _ in results) == [201] + [409] * 7
        if workers == 1:
            assert len(r.gateway.registry) == 1
