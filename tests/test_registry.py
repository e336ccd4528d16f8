"""The registry as plain data: ids, secrets kept only as digests, members, creator, names."""

from __future__ import annotations

import re

import orjson

from pugfast.names import NAMES, pick_name
from pugfast.registry import Registry, secret_digest


def make_room(registry: Registry):
    return registry.create(ttl=60, capacity=3, join_window=5, group=object(), now=10.0, wall_ms=1000)


def test_ids_and_secrets_are_16_random_bytes_in_b64u_and_only_the_digest_is_kept() -> None:
    registry = Registry()
    room, secret = make_room(registry)
    for value in (room.id, secret):
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", value)
    assert room.secret_digest == secret_digest(secret)
    assert secret not in repr([getattr(room, name) for name in room.__slots__])
    assert (room.expires_at, room.expires_ms, room.join_deadline) == (70.0, 61000, 15.0)
    assert registry.get(room.id) is room
    registry.remove(room)
    assert registry.get(room.id) is None and len(registry) == 0


def test_member_ids_count_up_and_are_never_reused_and_the_first_joiner_is_creator() -> None:
    room, _ = make_room(Registry())
    first, second = room.add_member("a"), room.add_member("b")
    assert (first.id, second.id, room.creator_id) == (1, 2, 1)
    room.remove_member(first)
    assert room.creator_id is None
    third = room.add_member("c")
    assert third.id == 3 and room.creator_id is None


def test_names_are_unique_in_a_room_even_when_the_word_list_runs_out() -> None:
    taken: set[str] = set()
    for _ in range(3100):
        name = pick_name(taken)
        assert name not in taken
        taken.add(name)


def test_the_roster_lists_every_member_in_join_order_as_json() -> None:
    room, _ = make_room(Registry())
    members = [room.add_member(conn) for conn in "abc"]
    room.remove_member(members[1])
    room.add_member("d")
    listed = orjson.loads(b"[" + room.roster + b"]")
    assert listed == [{"id": m.id, "name": m.name} for m in room.members.values()]
    assert [entry["id"] for entry in listed] == [1, 3, 4]
    for member in room.members.values():
        assert orjson.loads(member.describe()) == {"id": member.id, "name": member.name}


def test_every_name_needs_no_escaping_in_json() -> None:
    for name in [*NAMES, f"{NAMES[0]} 17"]:
        assert orjson.dumps(name) == b'"' + name.encode("ascii") + b'"'
