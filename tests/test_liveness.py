"""Liveness by deadline (pugfast/liveness.py), without a network: the wheel files and finds
connections, and the policy pings, closes and files them again, on a clock the test turns.

The connections here are stand-ins with the few attributes the module reads (the engine's
``Connection`` and the gateway's ``Session`` have the same); the relay-level behaviour over
real sockets is in test_websocket.py.
"""

from __future__ import annotations

import random

import pytest

from pugfast.liveness import CLOSE_GOING_AWAY, CLOSE_JOIN_TIMEOUT, SLICE, Liveness, Wheel

JOIN, PING, IDLE = 10.0, 20.0, 60.0
TICK = 1.0  # min(1.0, JOIN / 4, PING / 4)


class Session:
    def __init__(self) -> None:
        self.member: object | None = None
        self.pinged_at = 0.0
        self.due_slot = -1


class Conn:
    """What pugfast.liveness reads and calls of a connection, written down."""

    def __init__(self, now: float) -> None:
        self.session = Session()
        self.opened_at = self.last_activity = now
        self.closing = False
        self.closed: tuple[int, float] | None = None
        self.pings: list[float] = []
        self.now = now

    def close(self, code: int, reason: str = "") -> None:
        self.closing = True
        self.closed = (code, self.now)

    def ping(self) -> None:
        self.pings.append(self.now)


class Clock:
    """Turns a Liveness's clock a tick at a time, sweeping as the gateway does."""

    def __init__(self, liveness: Liveness, conns: list[Conn], start: float = 0.0) -> None:
        self.liveness = liveness
        self.conns = conns
        self.now = start

    def run_until(self, end: float, *, answer_pings: bool = False) -> None:
        while self.now < end:
            self.now = self.liveness.next_sweep(self.now)
            for conn in self.conns:
                conn.now = self.now
            while self.liveness.sweep(self.now):
                pass
            if answer_pings:
                for conn in self.conns:
                    if conn.pings and conn.pings[-1] == self.now:
                        conn.last_activity = self.now  # the pong


def joined(liveness: Liveness, now: float) -> Conn:
    conn = Conn(now)
    liveness.add(conn)
    conn.session.member = object()
    return conn


def test_the_wheel_gives_an_item_back_within_one_tick_after_its_due_time_never_before() -> None:
    wheel = Wheel(tick=0.5, horizon=10.0, now=0.0)
    rng = random.Random(7)
    dues = {f"item{i}": rng.uniform(0, 9.9) for i in range(500)}
    for item, due in dues.items():
        wheel.file(item, due)
    now, found = 0.0, {}
    while now < 11:
        now += 0.5
        for item in wheel.take(now, limit=10_000):
            found[item] = now
    assert set(found) == set(dues)
    assert all(dues[item] < found[item] <= dues[item] + 0.5 for item in dues)
    assert len(wheel) == 0


def test_the_wheel_gives_back_at_most_the_limit_and_the_rest_later() -> None:
    wheel = Wheel(tick=1.0, horizon=10.0, now=0.0)
    for i in range(150):
        wheel.file(i, 2.5)
    assert wheel.take(2.9, 64) == []  # its tick has not passed yet
    slices = [wheel.take(5.0, 64) for _ in range(4)]
    assert [len(taken) for taken in slices] == [64, 64, 22, 0]
    assert sorted(item for taken in slices for item in taken) == list(range(150))
    assert len(wheel) == 0


def test_a_connection_that_does_not_join_is_closed_4408_within_a_tick_of_its_deadline() -> None:
    liveness = Liveness(JOIN, PING, IDLE, now=0.0)
    conn = Conn(0.3)
    liveness.add(conn)
    clock = Clock(liveness, [conn])
    clock.run_until(JOIN + 5)
    assert conn.closed is not None
    code, at = conn.closed
    assert code == CLOSE_JOIN_TIMEOUT
    assert 0.3 + JOIN <= at <= 0.3 + JOIN + TICK
    assert liveness.visits == 1  # looked at once, at its deadline


def test_a_silent_member_is_pinged_once_per_interval_and_closed_within_a_tick_of_idle() -> None:
    liveness = Liveness(JOIN, PING, IDLE, now=0.0)
    conn = joined(liveness, 0.3)
    Clock(liveness, [conn]).run_until(IDLE + 10)
    assert conn.closed is not None
    code, at = conn.closed
    assert code == CLOSE_GOING_AWAY
    assert 0.3 + IDLE <= at <= 0.3 + IDLE + TICK
    # Pinged after 20 to 25 s of silence, then again 20 to 25 s after each ping.
    assert len(conn.pings) == 2
    assert 0.3 + PING <= conn.pings[0] <= 0.3 + PING * 1.25 + TICK
    assert PING <= conn.pings[1] - conn.pings[0] <= PING * 1.25 + TICK


def test_a_member_that_answers_pings_is_pinged_once_per_interval_and_kept() -> None:
    liveness = Liveness(JOIN, PING, IDLE, now=0.0)
    conn = joined(liveness, 0.0)
    Clock(liveness, [conn]).run_until(1000, answer_pings=True)
    assert conn.closed is None
    gaps = [b - a for a, b in zip(conn.pings, conn.pings[1:], strict=False)]
    assert len(conn.pings) >= 1000 / (PING * 1.25 + TICK) - 1
    assert all(PING <= gap <= PING * 1.25 + TICK for gap in gaps), gaps


def test_a_member_that_speaks_is_looked_at_once_per_interval_not_at_every_tick() -> None:
    liveness = Liveness(JOIN, PING, IDLE, now=0.0)
    conns = [joined(liveness, 0.0) for _ in range(100)]
    clock = Clock(liveness, conns)
    for second in range(1, 601):
        clock.run_until(float(second))
        for conn in conns:
            conn.last_activity = clock.now  # each says something every second
    assert all(not conn.pings and conn.closed is None for conn in conns)
    # Each was looked at about once per ping interval (the first at its join deadline), where
    # a scan would have looked at each of them 600 times.
    assert liveness.visits <= 100 * (1 + 600 / PING)


def test_members_who_fell_silent_together_are_pinged_over_a_quarter_interval() -> None:
    liveness = Liveness(JOIN, PING, IDLE, now=0.0)
    conns = [joined(liveness, 0.0) for _ in range(2000)]
    Clock(liveness, conns).run_until(PING * 1.25 + 2)
    firsts = sorted(conn.pings[0] for conn in conns)
    assert firsts[0] >= PING and firsts[-1] <= PING * 1.25 + TICK
    # Spread across the quarter interval (5 s): no second holds more than about a fifth.
    per_second: dict[int, int] = {}
    for at in firsts:
        per_second[int(at)] = per_second.get(int(at), 0) + 1
    assert len(per_second) >= 5 and max(per_second.values()) < 2000 * 0.3, per_second


def test_a_sweep_looks_at_a_bounded_slice_and_says_when_more_are_due() -> None:
    liveness = Liveness(JOIN, PING, IDLE, now=0.0, spread=lambda: 0.0)
    conns = [joined(liveness, 0.0) for _ in range(1000)]
    for conn in conns:
        conn.now = JOIN + TICK
    slices = []
    while True:
        before = liveness.visits
        more = liveness.sweep(JOIN + TICK)
        slices.append(liveness.visits - before)
        if not more:
            break
    assert max(slices) == SLICE and sum(slices) == 1000
    assert len(slices) == 1000 // SLICE + 1


def test_a_connection_removed_is_never_looked_at() -> None:
    liveness = Liveness(JOIN, PING, IDLE, now=0.0)
    kept, gone = joined(liveness, 0.0), joined(liveness, 0.0)
    liveness.remove(gone)
    assert gone.session.due_slot == -1
    Clock(liveness, [kept, gone]).run_until(IDLE + 10)
    assert kept.closed is not None and gone.closed is None and not gone.pings
    assert len(liveness.wheel) == 0


def test_a_closing_connection_is_let_go() -> None:
    liveness = Liveness(JOIN, PING, IDLE, now=0.0)
    conn = joined(liveness, 0.0)
    conn.closing = True
    Clock(liveness, [conn]).run_until(IDLE + 10)
    assert conn.closed is None and not conn.pings and len(liveness.wheel) == 0


@pytest.mark.parametrize(("join", "ping", "idle"), [(0.3, 0.2, 0.6), (10, 0.2, 5), (2, 30, 90)])
def test_short_intervals_are_met_too(join: float, ping: float, idle: float) -> None:
    liveness = Liveness(join, ping, idle, now=0.0)
    tick = liveness.tick
    unjoined, silent = Conn(0.0), joined(liveness, 0.0)
    liveness.add(unjoined)
    Clock(liveness, [unjoined, silent]).run_until(max(join, idle) + 1)
    assert unjoined.closed is not None and join <= unjoined.closed[1] <= join + tick
    assert silent.closed is not None and idle <= silent.closed[1] <= idle + tick
    assert silent.pings and ping <= silent.pings[0] <= ping * 1.25 + tick
