"""The pugfast.client library against a real relay over loopback: joining, talking, presence,
every refusal, the size limit, purge and expiry, creating a room, and a dishonest relay's
replays and reorderings played by a raw WebSocket member (no mocks)."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

import pytest
from hostile_kit import HostileMember
from support import RunningRelay, free_port, running_relay

from pugfast.client import (
    Ended,
    Event,
    Joined,
    Left,
    Link,
    Message,
    MessageTooLarge,
    NoSuchRoom,
    NotConnected,
    NotCreator,
    RelayUnreachable,
    Replayed,
    Room,
    RoomFull,
    Undecryptable,
    WrongSecret,
    create_room,
    parse_link,
)
from pugfast.client._b64u import b64u_encode

TIMEOUT = 5.0


def link_for(relay: RunningRelay, room: dict[str, Any], key: bytes | None = None) -> Link:
    key_text = b64u_encode(key or os.urandom(32))
    return parse_link(f"{relay.base}/r/{room['room']}#k={key_text}&s={room['secret']}")


async def next_event(room: Room, kind: type | tuple[type, ...] = object) -> Event:
    """The next event of ``kind``, skipping others."""
    async def find() -> Event:
        async for event in room:
            if isinstance(event, kind):
                return event
        raise AssertionError(f"the room ended before a {kind}")

    return await asyncio.wait_for(find(), TIMEOUT)


async def test_two_clients_talk_both_ways_and_see_each_other(loop_name: str) -> None:
    async with running_relay() as relay:
        link = link_for(relay, await relay.create_room(capacity=3))
        async with Room.join(link) as alice:
            assert alice.creator and list(alice.members) == [alice.me.id]
            async with Room.join(str(link)) as bob:
                assert not bob.creator
                assert [m.name for m in bob.members.values()] == [alice.me.name, bob.me.name]
                assert (await next_event(alice)) == Joined(bob.me)
                assert alice.fingerprint == bob.fingerprint and len(alice.fingerprint) == 9
                assert 3590 < bob.seconds_left() <= 3600
                assert bob.capacity == 3

                await alice.send("Grüße 🐶\nsecond line")
                got = await next_event(bob, Message)
                assert isinstance(got, Message)
                assert got.sender == alice.me and got.text == "Grüße 🐶\nsecond line"
                assert abs(got.ts - time.time() * 1000) < 5000  # the sender's clock, in ms
                await bob.send("hi")
                back = await next_event(alice, Message)
                assert isinstance(back, Message) and (back.sender, back.text) == (bob.me, "hi")
            # Bob left: Alice is told; Bob's own iteration ended with "left".
            assert (await next_event(alice)) == Left(bob.me)
            assert bob.ended is not None and bob.ended.reason == "left"
            assert [e async for e in bob] == [bob.ended]  # then nothing more, however often asked
            assert [e async for e in bob] == []
            with pytest.raises(NotConnected):
                await bob.send("too late")


async def test_awaiting_join_gives_a_room_to_leave_by_hand(loop_name: str) -> None:
    async with running_relay() as relay:
        room = await Room.join(link_for(relay, await relay.create_room()))
        await room.leave()
        await room.leave()
        assert room.ended is not None and [e async for e in room] == [room.ended]


async def test_replayed_reordered_and_reattributed_ciphertexts_are_refused(loop_name: str) -> None:
    async with running_relay() as relay:
        link = link_for(relay, await relay.create_room())
        async with Room.join(link) as alice, Room.join(link) as bob:
            mallory = await asyncio.to_thread(HostileMember, link)
            await next_event(bob, Joined)

            # Mallory captures Alice's ciphertext and sends it again as her own: it does not
            # decrypt under Mallory's key (the sender's id is bound into every message).
            await alice.send("pay the invoice")
            assert isinstance(await next_event(bob, Message), Message)

            def alices_frame() -> bytes:
                while True:
                    frame = mallory.ws.recv(timeout=TIMEOUT)
                    if isinstance(frame, bytes) and frame[4:6] == b"\x02\x02":
                        assert int.from_bytes(frame[:4], "big") == alice.me.id
                        return frame[4:]

            captured = await asyncio.to_thread(alices_frame)
            await asyncio.to_thread(mallory.ws.send, captured)
            event = await next_event(bob, (Message, Undecryptable, Replayed))
            assert isinstance(event, Undecryptable) and event.sender.id == mallory.id

            # Mallory's own messages, out of order and repeated: each key opens one message once.
            frames = [mallory.ring.seal(json.dumps({"text": t, "ts": 1}).encode().ljust(256))
                      for t in ("one", "two", "three")]
            for index in (1, 0, 1, 2):
                await asyncio.to_thread(mallory.ws.send, frames[index])
            seen = [await next_event(bob, (Message, Replayed)) for _ in range(4)]
            assert [e.text if isinstance(e, Message) else type(e).__name__ for e in seen] == [
                "two", "Replayed", "Replayed", "three",
            ]

            # Garbage and altered ciphertexts are "could not be decrypted", never text.
            bad = mallory.ring.seal(b'{"text":"x","ts":1}'.ljust(256))
            await asyncio.to_thread(mallory.ws.send, bad[:10] + os.urandom(40))  # her chain, garbage
            await asyncio.to_thread(mallory.ws.send, bad[:-1] + bytes([bad[-1] ^ 1]))
            for _ in range(2):
                event = await next_event(bob, (Message, Undecryptable))
                assert isinstance(event, Undecryptable) and "could not be decrypted" in event.reason
            # The genuine sender still gets through.
            await alice.send("second real message")
            last = await next_event(bob, (Message, Replayed))
            assert isinstance(last, Message) and last.text == "second real message"
            await asyncio.to_thread(mallory.close)


async def test_refusals_raise_their_own_errors(loop_name: str) -> None:
    async with running_relay() as relay:
        created = await relay.create_room(capacity=2)
        link = link_for(relay, created)
        with pytest.raises(NoSuchRoom) as gone:
            await Room.join(parse_link(str(link).replace(link.room, "A" * 21 + "Q")))
        assert gone.value.code == 4404
        flipped = ("A" if created["secret"][0] != "A" else "B") + created["secret"][1:]
        with pytest.raises(WrongSecret) as wrong:
            await Room.join(str(link).replace(created["secret"], flipped))
        assert wrong.value.code == 4403
        async with Room.join(link), Room.join(link):
            with pytest.raises(RoomFull) as full:
                await Room.join(link)
            assert full.value.code == 4409
    with pytest.raises(RelayUnreachable, match="cannot reach the relay"):
        await Room.join(str(link).replace(f":{relay.port}/", f":{free_port()}/"))


async def test_a_message_over_the_size_limit_is_refused_and_not_sent(loop_name: str) -> None:
    # 1024 bytes: the 512-byte bucket is the largest whose ciphertext fits.
    async with running_relay(max_message_bytes=1024) as relay:
        link = link_for(relay, await relay.create_room())
        async with Room.join(link) as alice, Room.join(link) as bob:
            await next_event(alice, Joined)
            assert alice.max_message_bytes == 1024
            limit = alice.text_limit()
            assert 400 < limit < 512
            with pytest.raises(MessageTooLarge) as caught:
                await alice.send("x" * (limit + 1))
            assert (caught.value.size, caught.value.limit) == (limit + 1, limit)
            assert "not sent" in str(caught.value)
            await alice.send("y" * limit)
            got = await next_event(bob, Message)
            assert isinstance(got, Message) and got.text == "y" * limit


async def test_purge_by_the_creator_ends_the_room_for_everyone(loop_name: str) -> None:
    async with running_relay() as relay:
        link = link_for(relay, await relay.create_room())
        async with Room.join(link) as alice, Room.join(link) as bob:
            with pytest.raises(NotCreator):
                await bob.purge()
            await alice.purge()
            for room in (alice, bob):
                ended = await next_event(room, Ended)
                assert isinstance(ended, Ended) and ended.reason == "purged"
                assert "purged" in ended.message
            with pytest.raises(NotConnected):
                await alice.send("after the end")
        with pytest.raises(NoSuchRoom):
            await Room.join(link)


async def test_expiry_ends_the_room(loop_name: str) -> None:
    async with running_relay(ttl_min=1) as relay:
        link = link_for(relay, await relay.create_room(ttl=1))
        async with Room.join(link) as alice:
            ended = await next_event(alice, Ended)
            assert isinstance(ended, Ended) and ended.reason == "expired"


async def test_create_room_solves_the_proof_of_work_and_makes_a_fresh_key(loop_name: str) -> None:
    async with running_relay(pow_difficulty=10) as relay:
        progress: list[tuple[int, int]] = []
        link = await create_room(relay.base + "/", ttl=120, capacity=3,
                                 progress=lambda *a: progress.append(a))
        assert progress and progress[-1][1] == 10
        other = await create_room(relay.base)
        assert link.key != other.key and link.room != other.room and link.origin == relay.base
        async with Room.join(link) as room:
            assert room.creator and room.capacity == 3
            assert 110 < room.seconds_left() <= 120
