"""The library facing hostile members and a hostile relay (issue 19, items 1, 5 and 6): a lone
surrogate arrives repaired; the replay guard and the event backlog stay bounded whatever a
member sends; every field the relay sends is checked. Real relays on loopback; a hostile relay
is an aiohttp server the test runs, answering what the test tells it to."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from client_kit import chat_command
from hostile_kit import HostileMember, b64u
from support import ServerProcess, running_relay

from pugfast.client import (
    ApiError,
    Ended,
    Event,
    Message,
    Overflow,
    RelayAnswerError,
    Room,
    Undecryptable,
    answers,
    parse_link,
)
from pugfast.client.backlog import MAX_PENDING_EVENTS, Backlog
from pugfast.client.chat import EXIT_ERROR
from pugfast.client.events import Joined, Member
from pugfast.client.senderkeys import MAX_PENDING, PENDING_SECONDS, KeyRing, Readable, Unreadable

TIMEOUT = 15.0
ROOM = "AAAAAAAAAAAAAAAAAAAAAA"
LINK_KEY = bytes(range(32))


# -- item 5: what a member can make another member keep --------------------------------------


def ring_pair() -> tuple[KeyRing, KeyRing]:
    """Two members of one room whose keys are exchanged: (receiver, hostile)."""
    receiver, hostile = KeyRing(LINK_KEY, ROOM), KeyRing(LINK_KEY, ROOM)
    receiver.start(1, [2])
    hostile.start(2, [1])
    for _ in range(3):
        for member, ring, other in ((1, receiver, hostile), (2, hostile, receiver)):
            ring.flush()
            frames, ring.outbox = ring.outbox, []
            for frame in frames:
                other.on_frame(member, frame, 0.0)
    assert hostile.holders() == {1}
    return receiver, hostile


def test_a_member_starting_a_new_chain_on_every_message_grows_nothing() -> None:
    receiver, hostile = ring_pair()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        shown = 0
        for i in range(5_000):
            hostile.rekey()
            for frame in [*hostile.outbox, hostile.seal(b'{"text":"x","ts":1}'.ljust(256))]:
                shown += sum(isinstance(o, Readable) for o in receiver.on_frame(2, frame, float(i)))
            hostile.outbox.clear()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert shown == 5_000
    assert grown < 64 * 1024, f"the receiver's keys grew by {grown:,} bytes"


def test_frames_from_members_nobody_announced_leave_no_state() -> None:
    receiver, hostile = ring_pair()
    frame = hostile.seal(b'{"text":"x","ts":1}'.ljust(256))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        outcomes = [receiver.on_frame(member, frame, 0.0) for member in range(10, 100_010)]
        del outcomes
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert receiver.present() == {2}
    assert grown < 64 * 1024


def test_messages_waiting_for_keys_are_bounded() -> None:
    receiver, hostile = ring_pair()
    hostile.rekey()
    hostile.outbox.clear()  # the new chain's keys never arrive
    outcomes = [o for _ in range(200) for o in receiver.on_frame(2, hostile.seal(b"{}".ljust(256)), 0.0)]
    assert outcomes == [Unreadable(2, "no-keys")] * (200 - MAX_PENDING)
    assert receiver.tick(PENDING_SECONDS + 1) == [Unreadable(2, "no-keys")] * MAX_PENDING


# -- item 5: the event backlog -------------------------------------------------------------------


def message(text: str = "x") -> Message:
    return Message(Member(1, "A"), text, 0)


async def drain(backlog: Backlog) -> list[Event]:
    events: list[Event] = []
    while (event := await backlog.get()) is not None:
        events.append(event)
    return events


async def test_a_full_backlog_drops_and_says_how_many(loop_name: str) -> None:
    backlog = Backlog(max_events=3)
    for i in range(5):
        backlog.put(message(str(i)))
    assert len(backlog) == 3
    backlog.put(Ended("lost", None, "connection lost"))
    backlog.put(message("after the end"))
    events = await drain(backlog)
    ended = Ended("lost", None, "connection lost")
    assert events == [message("0"), message("1"), message("2"), Overflow(2), ended]


async def test_the_overflow_comes_as_soon_as_what_was_kept_is_taken(loop_name: str) -> None:
    backlog = Backlog(max_events=2, max_text=10)
    backlog.put(message("x" * 8))
    backlog.put(message("y" * 8))  # over the text budget: dropped
    assert await backlog.get() == message("x" * 8)
    assert await backlog.get() == Overflow(1)
    backlog.put(message("z"))
    assert await backlog.get() == message("z")


async def test_a_consumer_that_does_not_read_costs_a_bounded_backlog(loop_name: str) -> None:
    async with running_relay(rate_limit=0) as relay:
        created = await relay.create_room()
        link = parse_link(f"{relay.base}/r/{created['room']}#k={b64u(os.urandom(32))}&s={created['secret']}")
        async with Room.join(link) as reader:
            hostile = await asyncio.to_thread(HostileMember, link)
            total = MAX_PENDING_EVENTS + 500

            def send_all() -> None:
                for n in range(1, total + 1):
                    hostile.say(f"message {n}")

            await asyncio.to_thread(send_all)
            # Nobody iterates while the flood arrives; the room keeps reading the connection.
            for _ in range(200):
                if len(reader._events) >= MAX_PENDING_EVENTS:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            assert len(reader._events) == MAX_PENDING_EVENTS
            seen: list[Event] = []
            async for event in reader:
                seen.append(event)
                if isinstance(event, Overflow):
                    break
            await asyncio.to_thread(hostile.say, "after the flood")
            async for event in reader:
                seen.append(event)
                if isinstance(event, Message) and event.text == "after the flood":
                    break
            dropped = sum(e.dropped for e in seen if isinstance(e, Overflow))
            texts = [e.text for e in seen if isinstance(e, Message)]
            # The backlog held the hostile member's arrival and the first 1,023 messages.
            assert isinstance(seen[0], Joined)
            kept = MAX_PENDING_EVENTS - 1
            assert texts[:kept] == [f"message {n}" for n in range(1, kept + 1)]
            assert dropped == total - kept
            assert texts[-1] == "after the flood"
            assert reader.ended is None, "the connection outlived the flood"
            await asyncio.to_thread(hostile.close)


# -- item 1: a lone surrogate, end to end ---------------------------------------------------------


async def test_a_lone_surrogate_reaches_the_library_repaired(loop_name: str) -> None:
    async with running_relay() as relay:
        created = await relay.create_room()
        link = parse_link(f"{relay.base}/r/{created['room']}#k={b64u(os.urandom(32))}&s={created['secret']}")
        async with Room.join(link) as reader:
            hostile = await asyncio.to_thread(HostileMember, link)
            await asyncio.to_thread(hostile.send, b'{"text":"X\\ud800Y","ts":1}')
            await asyncio.to_thread(hostile.say, "still here")
            got = []
            async for event in reader:
                if isinstance(event, Message):
                    got.append(event.text)
                    if len(got) == 2:
                        break
            assert got == ["X\ufffdY", "still here"]
            print(got[0])  # writing it out works; it raised UnicodeEncodeError before
            await asyncio.to_thread(hostile.close)


def test_a_member_using_a_new_chain_for_every_message_leaves_memory_flat(tmp_path: Path) -> None:
    """100,000 messages through a real relay, each under a chain id of its own whose keys
    never come (the sid of protocol version 1 changed every time, in version 2's terms): the
    receiving Room's memory (tracemalloc: everything this process allocates) does not grow
    with them. The hostile member is a process of its own, so that only the receiver is
    measured. tests/test_client_hostile.py's ring tests cover new chains whose keys do come."""
    # No rate limit, and room to buffer the whole flood: the receiver (slowed by tracemalloc)
    # is to fall behind, not to be dropped as a slow consumer.
    server = ServerProcess("--rate-limit", "0", "--max-buffered-bytes", str(64 * 1024 * 1024))
    total = 100_000
    try:
        asyncio.run(server.ready())
        created = asyncio.run(server.create_room())
        link = parse_link(f"{server.base}/r/{created['room']}#k={b64u(os.urandom(32))}&s={created['secret']}")
        sizes: dict[int, int] = {}

        async def receive() -> int:
            unread = 0
            async with Room.join(link) as room:
                script = tmp_path / "hostile.py"
                script.write_text(
                    "import os, struct, sys\n"
                    "from hostile_kit import HostileMember\n"
                    "hostile = HostileMember(sys.argv[1])\n"
                    "hostile.say('first')\n"
                    f"for chain in range(2, {total} + 1):\n"
                    "    hostile.ws.send(b'\\x02\\x02' + struct.pack('>II', chain, 0) + os.urandom(272))\n"
                    "hostile.say('last')\n"
                    "hostile.close()\n"
                )
                sender = subprocess.Popen([sys.executable, str(script), str(link)],
                                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
                try:
                    async for event in room:
                        if isinstance(event, Undecryptable):
                            unread += 1
                        elif isinstance(event, Ended | Overflow):
                            raise AssertionError(event)
                        if unread in (10_000, total - 1 - MAX_PENDING) and unread not in sizes:
                            sizes[unread] = tracemalloc.get_traced_memory()[0]
                        if isinstance(event, Message) and event.text == "last":
                            return unread
                finally:
                    await asyncio.to_thread(sender.wait, 120)
            raise AssertionError("the room ended")

        tracemalloc.start()
        try:
            unread = asyncio.run(receive())
        finally:
            tracemalloc.stop()
        # All but the last MAX_PENDING were reported at once; those wait for keys.
        assert unread >= total - 1 - MAX_PENDING
        grown = sizes[total - 1 - MAX_PENDING] - sizes[10_000]
        assert grown < 1024 * 1024, f"memory grew by {grown:,} bytes over 90,000 messages"
    finally:
        server.stop()


# -- item 6: a hostile relay's answers --------------------------------------------------------------

GOOD_MEMBER = {"id": 2, "name": "Amber Otter"}
GOOD_WELCOME = {"type": "welcome", "you": GOOD_MEMBER, "creator": False,
                "members": [{"id": 1, "name": "Quick Swan"}, GOOD_MEMBER],
                "expires": 1_700_000_000_000, "capacity": 8}


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"expires": float("inf")}, "expires is Infinity"),
        ({"expires": 1e400}, "expires is Infinity"),
        ({"expires": "soon"}, "expires"),
        ({"expires": 2**60}, "expires"),
        ({"capacity": -1}, "capacity"),
        ({"capacity": 1}, "capacity"),  # fewer than the members listed
        ({"creator": "yes"}, "creator"),
        ({"you": {"id": 0, "name": "x"}}, "member id is 0"),
        ({"you": {"id": 2**32, "name": "x"}}, "member id"),
        ({"you": {"id": True, "name": "x"}}, "member id"),
        ({"you": {"id": 2, "name": "x" * 201}}, "name"),
        ({"you": {"id": 2, "name": ""}}, "name"),
        ({"members": "everyone"}, "members is not a list"),
        ({"members": [GOOD_MEMBER, GOOD_MEMBER]}, "twice"),
        ({"members": [{"id": 1, "name": "Quick Swan"}]}, "leaves out"),
    ],
)
def test_every_welcome_field_is_checked(change: dict[str, Any], says: str) -> None:
    answers.welcome(GOOD_WELCOME)  # the good one passes
    with pytest.raises(RelayAnswerError, match=says):
        answers.welcome({**GOOD_WELCOME, **change})


def test_a_relay_names_are_repaired_and_a_bad_notice_is_ignored() -> None:
    assert answers.member({"id": 3, "name": "Eve\ud800"}).name == "Eve\ufffd"
    assert answers.loads('{"a": 1}') == {"a": 1}
    with pytest.raises(ValueError):
        answers.loads('{"a": Infinity}')
    with pytest.raises(RelayAnswerError, match="maxMessageBytes"):
        answers.max_message_bytes({"maxMessageBytes": 2**40})
    assert answers.error_code({"code": "x\x1b[2J" * 40}).startswith("x\\u001b[2J")
    assert len(answers.error_code({"code": "y" * 1000})) == 64


@asynccontextmanager
async def hostile_relay(welcome: str | None = None, limits: tuple[int, str] | None = None,
                        ) -> AsyncIterator[str]:
    """A relay that answers ``/api/limits`` with ``limits`` (status, body) and the join with
    ``welcome`` (raw text); yields a link to it."""

    async def get_limits(request: web.Request) -> web.Response:
        status, body = limits or (200, json.dumps({"maxMessageBytes": 65536}))
        return web.Response(status=status, text=body, content_type="application/json")

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.receive()
        if welcome is not None:
            await ws.send_str(welcome)
        await ws.receive()
        return ws

    app = web.Application()
    app.router.add_get("/api/limits", get_limits)
    app.router.add_get("/r/{room}/ws", websocket)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/r/{'A' * 22}#k={'A' * 43}&s={'A' * 22}"
    finally:
        await runner.cleanup()


async def test_a_welcome_with_expires_infinity_is_a_clear_error(loop_name: str) -> None:
    welcome = json.dumps({**GOOD_WELCOME, "expires": 1}).replace('"expires": 1', '"expires": Infinity')
    async with hostile_relay(welcome) as link:
        with pytest.raises(RelayAnswerError, match="malformed answer: a message during the join is not JSON"):
            await Room.join(link, timeout=5)
    welcome = json.dumps({**GOOD_WELCOME, "expires": 1}).replace('"expires": 1', '"expires": 1e400')
    async with hostile_relay(welcome) as link:
        with pytest.raises(RelayAnswerError, match="expires is Infinity, not a time"):
            await Room.join(link, timeout=5)


async def test_pugfast_chat_says_what_the_relay_got_wrong_and_exits_1(loop_name: str) -> None:
    welcome = json.dumps({**GOOD_WELCOME, "expires": 1}).replace('"expires": 1', '"expires": 1e400')
    async with hostile_relay(welcome) as link:
        process = await asyncio.create_subprocess_exec(
            *chat_command(link), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _out, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    assert process.returncode == EXIT_ERROR
    assert "Traceback" not in err.decode()
    said = "pugfast chat: error: the relay sent a malformed answer: the welcome's expires is Infinity"
    assert said in err.decode()


async def test_the_relays_own_words_are_escaped_before_they_reach_the_terminal(loop_name: str) -> None:
    body = json.dumps({"error": "at_capacity\x1b]52;c;cHduZWQ=\x07",
                       "message": "busy \u202e\x1b[2J\x9b31m please retry"})
    async with hostile_relay(limits=(503, body)) as link:
        with pytest.raises(ApiError) as caught:
            await Room.join(link, timeout=5)
        process = await asyncio.create_subprocess_exec(
            *chat_command(link), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, err = await asyncio.wait_for(process.communicate(), TIMEOUT)
    for shown in (str(caught.value), err.decode()):
        assert not any(ch in shown for ch in "\x1b\x07\x9b\u202e"), repr(shown)
        assert "busy \\u202e\\u001b[2J\\u009b31m please retry" in shown
    assert process.returncode == EXIT_ERROR


async def test_a_join_notice_that_is_not_well_formed_is_ignored(loop_name: str) -> None:
    async with running_relay() as relay:
        created = await relay.create_room()
        link = parse_link(f"{relay.base}/r/{created['room']}#k={b64u(os.urandom(32))}&s={created['secret']}")
        async with Room.join(link) as room:
            room._control({"type": "join", "member": {"id": -1, "name": "x"}})
            room._control({"type": "join", "member": {"id": 9, "name": "Eve\u202e"}})
            async for event in room:
                assert event == Joined(Member(9, "Eve\u202e"))
                break
