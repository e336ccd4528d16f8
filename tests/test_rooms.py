"""The room lifecycle over real sockets (docs/protocol.md §5): every way a room ends, what its
members are told, that nothing of it is left behind, creator rights and capacity."""

from __future__ import annotations

import asyncio
import logging

import pytest
from engines import client_frame
from protocol_helpers import expect_close_next, expect_type, join_frame, members, recv_relayed, wait_until
from support import running_relay


def assert_gone(r, room_id: str, stored) -> None:
    """Nothing of the room is left: not in the registry, no timer, no member, no group."""
    assert room_id not in r.gateway.registry.rooms
    assert len(r.gateway.registry) == 0
    assert stored.timer is None
    assert not stored.members
    assert len(stored.group) == 0


async def test_ttl_expiry_tells_every_member_then_closes_4410_expired() -> None:
    async with running_relay(ttl_min=1) as r:
        room = await r.create_room(ttl=1)
        stored = r.gateway.registry.get(room["room"])
        joined = await members(r, room, 3)
        for client, _ in joined:
            assert await client.recv_json(timeout=3) == {"type": "expired"}
            await expect_close_next(client, 4410, "expired")
        assert_gone(r, room["room"], stored)
        late = await r.raw(room["room"])
        late.send(join_frame(room["secret"]))
        await late.expect_closed_with(4404)


async def test_a_join_after_the_ttl_is_4404_even_before_the_timer_runs() -> None:
    async with running_relay(ttl_min=1) as r:
        room = await r.create_room(ttl=1)
        stored = r.gateway.registry.get(room["room"])
        # Hold the timer back, as a busy loop might: the deadline alone must refuse the join.
        stored.timer.cancel()
        stored.timer = None
        await asyncio.sleep(1.05)
        client = await r.raw(room["room"])
        client.send(join_frame(room["secret"]))
        await client.expect_closed_with(4404)


async def test_join_window_drops_a_room_nobody_joined_but_not_one_that_was_joined() -> None:
    async with running_relay(join_window=1) as r:
        unused, used = await r.create_room(), await r.create_room()
        unused_stored = r.gateway.registry.get(unused["room"])
        client, _ = await r.member(used)
        started = asyncio.get_running_loop().time()
        await wait_until(lambda: unused["room"] not in r.gateway.registry.rooms, timeout=2.5)
        assert asyncio.get_running_loop().time() - started >= 0.8
        assert unused_stored.timer is None
        late = await r.raw(unused["room"])
        late.send(join_frame(unused["secret"]))
        await late.expect_closed_with(4404)
        # The joined room outlives its join window, and its member is still connected.
        assert used["room"] in r.gateway.registry.rooms
        other, _ = await r.member(used)
        assert (await expect_type(client, "join"))["member"]["id"] == 2
        await other.send_binary(b"still here")
        assert await recv_relayed(client) == (2, b"still here")


LEAVES = ["tcp_close", "close_frame"]


async def leave(client, how: str) -> None:
    if how == "close_frame":
        client.send(client_frame(8, b"\x03\xe8"))
        await client.expect_closed_with(1000)
    await client.close()


@pytest.mark.parametrize("how", LEAVES)
async def test_the_last_member_leaving_ends_the_room(how: str) -> None:
    async with running_relay() as r:
        room = await r.create_room()
        stored = r.gateway.registry.get(room["room"])
        timer = stored.timer
        (a, wa), (b, _) = await members(r, room, 2)
        await leave(a, how)
        assert await b.recv_json() == {"type": "leave", "member": wa["you"]}
        assert room["room"] in r.gateway.registry.rooms
        await leave(b, how)
        await wait_until(lambda: len(r.gateway.registry) == 0)
        assert_gone(r, room["room"], stored)
        assert timer.cancelled()
        late = await r.raw(room["room"])
        late.send(join_frame(room["secret"]))
        await late.expect_closed_with(4404)


async def test_a_connection_that_never_joined_does_not_end_the_room() -> None:
    async with running_relay() as r:
        room = await r.create_room()
        idle = await r.raw(room["room"])
        await idle.close()
        wrong = await r.raw(room["room"])
        wrong.send(join_frame("A" * 22))
        await wrong.expect_closed_with(4403)
        await r.member(room)
        assert room["room"] in r.gateway.registry.rooms


async def test_creator_purge_tells_everyone_purged_and_closes_4410() -> None:
    async with running_relay() as r:
        room = await r.create_room()
        stored = r.gateway.registry.get(room["room"])
        timer = stored.timer
        joined = await members(r, room, 3)
        assert [w["creator"] for _, w in joined] == [True, False, False]
        await joined[0][0].send_json({"type": "purge"})
        for client, _ in joined:
            assert await client.recv_json() == {"type": "purged"}
            await expect_close_next(client, 4410, "purged")
        assert_gone(r, room["room"], stored)
        assert timer.cancelled()
        late = await r.raw(room["room"])
        late.send(join_frame(room["secret"]))
        await late.expect_closed_with(4404)


async def test_purge_from_a_non_creator_is_refused_and_the_room_stays() -> None:
    async with running_relay() as r:
        room = await r.create_room()
        (a, wa), (b, wb) = await members(r, room, 2)
        await b.send_json({"type": "purge"})
        assert await b.recv_json() == {"type": "error", "code": "not_creator"}
        await b.send_binary(b"after")
        assert await recv_relayed(a) == (wb["you"]["id"], b"after")
        await a.send_binary(b"back")
        assert await recv_relayed(b) == (wa["you"]["id"], b"back")
        assert room["room"] in r.gateway.registry.rooms


async def test_when_the_creator_leaves_the_room_lives_on_and_nobody_can_purge() -> None:
    async with running_relay() as r:
        room = await r.create_room()
        (a, wa), (b, wb), (c, _wc) = await members(r, room, 3)
        await a.close()
        for client in (b, c):
            assert await client.recv_json() == {"type": "leave", "member": wa["you"]}
        for client in (b, c):
            await client.send_json({"type": "purge"})
            assert await client.recv_json() == {"type": "error", "code": "not_creator"}
        # Nor does a newcomer (or the old creator coming back) become the creator.
        d, wd = await r.member(room)
        assert wd["creator"] is False
        await d.send_json({"type": "purge"})
        assert await d.recv_json() == {"type": "error", "code": "not_creator"}
        assert room["room"] in r.gateway.registry.rooms
        await b.send_binary(b"hi")
        assert (await expect_type(c, "join"))["member"] == wd["you"]
        assert await recv_relayed(c) == (wb["you"]["id"], b"hi")


async def test_capacity_counts_the_members_connected_now() -> None:
    async with running_relay() as r:
        room = await r.create_room(capacity=2)
        (a, _), (b, wb) = await members(r, room, 2)
        full = await r.raw(room["room"])
        full.send(join_frame(room["secret"]))
        await full.expect_closed_with(4409)
        # A refused joiner took no seat, and changed nothing for the members.
        await b.close()
        assert await a.recv_json() == {"type": "leave", "member": wb["you"]}
        _c, wc = await r.member(room)
        assert [m["id"] for m in wc["members"]] == [1, 3]
        assert wc["capacity"] == 2
        again = await r.raw(room["room"])
        again.send(join_frame(room["secret"]))
        await again.expect_closed_with(4409)


async def test_room_ids_are_unique_and_unrelated_to_the_secret() -> None:
    async with running_relay() as r:
        rooms = [await r.create_room() for _ in range(20)]
        values = [room["room"] for room in rooms] + [room["secret"] for room in rooms]
        assert len(set(values)) == 40


async def test_a_room_that_ends_while_others_run_leaves_them_alone() -> None:
    async with running_relay() as r:
        first, second = await r.create_room(), await r.create_room()
        (a, _), (b, _wb) = await members(r, first, 2)
        (c, _), (d, wd) = await members(r, second, 2)
        await a.send_json({"type": "purge"})
        await b.expect_closed_with(4410)
        await d.send_binary(b"unaffected")
        assert await recv_relayed(c) == (wd["you"]["id"], b"unaffected")
        assert list(r.gateway.registry.rooms) == [second["room"]]


async def test_a_joined_room_still_ends_at_its_ttl_after_the_join_window() -> None:
    # A join window shorter than the TTL: the room's one timer must be re-armed for the TTL.
    async with running_relay(ttl_min=1, join_window=0.3) as r:
        room = await r.create_room(ttl=1)
        client, _ = await r.member(room)
        started = asyncio.get_running_loop().time()
        assert await client.recv_json(timeout=3) == {"type": "expired"}
        assert asyncio.get_running_loop().time() - started >= 0.6
        await expect_close_next(client, 4410, "expired")
        assert len(r.gateway.registry) == 0


async def test_no_log_line_names_a_room_a_secret_or_a_client(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with running_relay(ttl_min=1) as r:
        purged, expiring = await r.create_room(), await r.create_room(ttl=1)
        (a, _), (b, _) = await members(r, purged, 2)
        c, _ = await r.member(expiring)
        ports = {str(client.writer.get_extra_info("sockname")[1]) for client in (a, b, c)}
        await a.send_binary(b"secret words")
        await recv_relayed(b)
        wrong = await r.raw(purged["room"])
        wrong.send(join_frame("A" * 22))
        await wrong.expect_closed_with(4403)
        await a.send_json({"type": "purge"})
        await b.expect_closed_with(4410)
        await c.expect_closed_with(4410, timeout=3)
    assert caplog.records, "nothing was logged at all: the capture is not working"
    for record in caplog.records:
        text = record.getMessage() + repr(record.args)
        for value in (purged["room"], purged["secret"], expiring["room"], expiring["secret"], *ports):
            assert value not in text, (record.name, record.getMessage())
        assert "secret words" not in text


async def test_join_notices_wait_briefly_but_never_fall_behind_a_message() -> None:
    """Join notices are deferred (pugfast.gateway.PRESENCE_DEFERRAL): members who come back
    together get them in one write. A member still learns of a joiner before anything the
    joiner sends, and of everyone who joined, in join order."""
    async with running_relay() as r:
        room = await r.create_room(capacity=5)
        first, _ = await r.member(room)
        second, welcome = await r.member(room)
        # The joiner speaks at once: its notice must reach the first member ahead of it.
        await second.send_binary(b"hello")
        assert (await expect_type(first, "join"))["member"] == welcome["you"]
        assert await recv_relayed(first) == (welcome["you"]["id"], b"hello")
        # Three join together; each member hears of every later joiner, in order.
        joiners = await asyncio.gather(*(r.raw(room["room"]) for _ in range(3)))
        for client in joiners:
            client.send(join_frame(room["secret"]))
        ids = sorted([(await client.recv_json())["you"]["id"] for client in joiners])
        assert ids == [3, 4, 5]
        for client in (first, second):
            heard = [(await expect_type(client, "join"))["member"]["id"] for _ in ids]
            assert heard == ids
