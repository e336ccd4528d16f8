"""A short chat against a running relay, walking a room's life as docs/protocol.md §3-§6 tells it.

    python scripts/chat_smoke.py http://127.0.0.1:3000

challenge -> create -> two members join over WebSocket -> each sends a binary message that the
other receives behind the sender's 4-byte id, with no echo -> the creator purges -> both get
{"type":"purged"} and close code 4410. The relay must run with --pow-difficulty 0 (any nonce
then solves the challenge). Needs only the standard library and aiohttp, a runtime dependency
of pugfast, so it runs from the Python of any environment the wheel was installed into, and it
never imports pugfast itself. Prints one line per step; exits 0 when every step held, else 1.
"""

from __future__ import annotations

import asyncio
import json
import os
import struct
import sys
from typing import Any

import aiohttp

# Generous: the relay may run under qemu on a busy machine (scripts/test_installed_wheel.sh).
STEP_TIMEOUT = 30.0


class SmokeFailure(Exception):
    pass


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SmokeFailure(what)


async def receive(ws: aiohttp.ClientWebSocketResponse[bool], who: str) -> tuple[aiohttp.WSMsgType, Any]:
    """The next message's type and data."""
    try:
        message = await ws.receive(timeout=STEP_TIMEOUT)
    except asyncio.TimeoutError:
        raise SmokeFailure(f"{who} waited {STEP_TIMEOUT:g} s and received nothing") from None
    return message.type, message.data


async def receive_json(ws: aiohttp.ClientWebSocketResponse[bool], who: str) -> dict[str, Any]:
    kind, data = await receive(ws, who)
    check(kind == aiohttp.WSMsgType.TEXT, f"{who} expected a text message, got {kind!r}")
    return json.loads(data)


async def join(
    session: aiohttp.ClientSession, base: str, room: dict[str, Any], who: str
) -> tuple[aiohttp.ClientWebSocketResponse[bool], dict[str, Any]]:
    ws = await session.ws_connect(f"{base}/r/{room['room']}/ws")
    await ws.send_str(json.dumps({"type": "join", "secret": room["secret"]}))
    welcome = await receive_json(ws, who)
    check(welcome.get("type") == "welcome", f"{who} expected a welcome, got {welcome}")
    return ws, welcome


async def relay_one(
    sender: aiohttp.ClientWebSocketResponse[bool], sender_id: int,
    receiver: aiohttp.ClientWebSocketResponse[bool], who: str,
) -> None:
    # Shaped like the browser's ciphertext: a version byte, then random bytes.
    payload = b"\x01" + os.urandom(60)
    await sender.send_bytes(payload)
    kind, data = await receive(receiver, who)
    check(kind == aiohttp.WSMsgType.BINARY, f"{who} expected a binary message, got {kind!r}")
    check(data == struct.pack("!I", sender_id) + payload,
          f"{who} expected the sender's id then the ciphertext unchanged")


async def expect_purged(ws: aiohttp.ClientWebSocketResponse[bool], who: str) -> None:
    # Anything else first (an echo of the member's own message, say) is a failure.
    final = await receive_json(ws, who)
    check(final == {"type": "purged"}, f"{who} expected {{'type': 'purged'}}, got {final}")
    kind, code = await receive(ws, who)
    # The close frame's own code: aiohttp's close_code may read 1006 if the relay has hung up
    # by the time aiohttp's reply to the close is written, which is the relay's right.
    check(kind == aiohttp.WSMsgType.CLOSE, f"{who} expected the close, got {kind!r}")
    check(code == 4410, f"{who} expected close code 4410, got {code}")


async def chat(base: str) -> None:
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.get(f"{base}/healthz") as response:
            check(response.status == 200, f"/healthz answered {response.status}")
            check(await response.json() == {"status": "ok"}, "/healthz did not say ok")
        print("ok: /healthz")

        async with session.post(f"{base}/api/challenge") as response:
            check(response.status == 200, f"/api/challenge answered {response.status}")
            challenge = await response.json()
        check(challenge.get("difficulty") == 0, "the relay must run with --pow-difficulty 0")
        print("ok: challenge issued")

        body = {"token": challenge["token"], "nonce": "0"}
        async with session.post(f"{base}/api/rooms", json=body) as response:
            check(response.status == 201, f"/api/rooms answered {response.status}: {await response.text()}")
            room = await response.json()
        print("ok: room created")

        alice, welcome_a = await join(session, base, room, "the first member")
        check(welcome_a["creator"] is True, "the first member to join must be the creator")
        bob, welcome_b = await join(session, base, room, "the second member")
        check(welcome_b["creator"] is False, "the second member must not be the creator")
        announced = await receive_json(alice, "the first member")
        check(announced.get("type") == "join" and announced["member"]["id"] == welcome_b["you"]["id"],
              f"the first member expected the second one's join, got {announced}")
        print("ok: two members joined")

        await relay_one(bob, welcome_b["you"]["id"], alice, "the first member")
        await relay_one(alice, welcome_a["you"]["id"], bob, "the second member")
        print("ok: binary messages relayed with the sender's 4-byte id")

        await alice.send_str(json.dumps({"type": "purge"}))
        await expect_purged(alice, "the first member")
        await expect_purged(bob, "the second member")
        print("ok: purge ended the room; both members closed with 4410, neither got an echo")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python scripts/chat_smoke.py http://HOST:PORT", file=sys.stderr)
        return 2
    try:
        asyncio.run(chat(argv[1].rstrip("/")))
    except (SmokeFailure, aiohttp.ClientError, OSError, KeyError, ValueError) as exc:
        print(f"FAIL: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
