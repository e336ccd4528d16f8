"""Creating a room as the home page does (docs/protocol.md §3, §4): ask for a proof-of-work
challenge, solve it, create the room, and make its key here, so the relay never sees it.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import secrets
from collections.abc import Callable
from typing import Any

import aiohttp

from . import _http
from .errors import ApiError, LinkError, RelayAnswerError
from .link import KEY_BYTES, Link, build_link, parse_link, parse_relay_url

Progress = Callable[[int, int], None]
"""Called as ``progress(tries, difficulty)`` while the proof of work is searched, and once more
with the final count when it is solved."""

PROGRESS_EVERY = 1 << 15
# docs/protocol.md §3.1: a token is printable ASCII of at most 256 characters.
MAX_TOKEN_LENGTH = 256
# A challenge expires (120 s by default) if solving it took too long; one retry then.
CREATE_ATTEMPTS = 2


def solve_challenge(token: str, difficulty: int, progress: Progress | None = None) -> tuple[str, int]:
    """The first nonce ``N`` (0, 1, 2, ...) for which SHA-256 of ``token + ":" + N`` starts with
    ``difficulty`` zero bits, and the number of tries it took.

    The token's part of the hash is computed once and copied for each try. Raises ValueError
    for a difficulty outside 0..256 or a token that is not ASCII.
    """
    if not 0 <= difficulty <= 256:
        raise ValueError(f"a proof-of-work difficulty is 0..256, not {difficulty}")
    prefix = hashlib.sha256(f"{token}:".encode("ascii"))
    # A digest starts with `difficulty` zero bits exactly when, read as a big-endian number,
    # it is below 2^(256 - difficulty); comparing equal-length bytes compares those numbers.
    limit = (1 << (256 - difficulty)).to_bytes(32, "big") if difficulty else None
    for tries in itertools.count(1):
        nonce = str(tries - 1)
        attempt = prefix.copy()
        attempt.update(nonce.encode("ascii"))
        if limit is None or attempt.digest() < limit:
            if progress is not None:
                progress(tries, difficulty)
            return nonce, tries
        if progress is not None and tries % PROGRESS_EVERY == 0:
            progress(tries, difficulty)
    raise AssertionError("unreachable")  # pragma: no cover - the count never ends


async def create_room(
    relay: str,
    *,
    ttl: int | None = None,
    capacity: int | None = None,
    insecure: bool = False,
    progress: Progress | None = None,
    timeout: float = 10.0,
) -> Link:
    """Creates a room on the relay at ``relay`` (``https://host[:port]``) and returns its link,
    with a fresh 32-byte key from the OS CSPRNG that only the link holds.

    ``ttl`` (seconds) and ``capacity`` are clamped by the relay into its ranges; None takes its
    defaults. ``progress`` is called on the event loop's thread while the proof of work is
    solved in a worker thread.

    Raises LinkError (a malformed relay URL), RelayUnreachable, ApiError (the relay refused,
    e.g. 400 for a ttl that is not an integer, 503 at its room limit) or RelayAnswerError (an
    answer that is not what docs/protocol.md says).
    """
    origin = parse_relay_url(relay)
    ssl_context = _http.ssl_setting(insecure)
    loop = asyncio.get_running_loop()

    def report(tries: int, difficulty: int) -> None:
        if progress is not None:
            loop.call_soon_threadsafe(progress, tries, difficulty)

    session_timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout)
    async with aiohttp.ClientSession(timeout=session_timeout) as session:
        for attempt in range(CREATE_ATTEMPTS):
            challenge, _ = await _http.request(
                session, "POST", origin, "/api/challenge", ssl_context=ssl_context
            )
            token, difficulty = _challenge_fields(challenge)
            nonce, _ = await asyncio.to_thread(solve_challenge, token, difficulty, report)
            body: dict[str, Any] = {"token": token, "nonce": nonce}
            if ttl is not None:
                body["ttl"] = ttl
            if capacity is not None:
                body["capacity"] = capacity
            try:
                created, _ = await _http.request(
                    session, "POST", origin, "/api/rooms", body=body, ssl_context=ssl_context
                )
            except ApiError as exc:
                if exc.code == "challenge_expired" and attempt + 1 < CREATE_ATTEMPTS:
                    continue
                raise
            break
    try:
        return parse_link(build_link(origin, str(created["room"]), secrets.token_bytes(KEY_BYTES),
                                     str(created["secret"])))
    except (KeyError, LinkError):
        raise RelayAnswerError("its answer to creating a room has no valid room id and secret") from None


def _challenge_fields(challenge: dict[str, Any]) -> tuple[str, int]:
    token, difficulty = challenge.get("token"), challenge.get("difficulty")
    if (
        not isinstance(token, str)
        or not 1 <= len(token) <= MAX_TOKEN_LENGTH
        or not (token.isascii() and token.isprintable())
        or not isinstance(difficulty, int)
        or isinstance(difficulty, bool)
        or not 0 <= difficulty <= 256
    ):
        raise RelayAnswerError("its proof-of-work challenge is not a token of printable ASCII "
                               f"(1 to {MAX_TOKEN_LENGTH} characters) and a difficulty from 0 to 256")
    return token, difficulty
