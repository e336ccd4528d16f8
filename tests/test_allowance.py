"""The relay-wide caps' bookkeeping (pugfast/allowance.py), without processes: a Ledger, and
the supervisor's CapBroker with its give-back rounds."""

from __future__ import annotations

from pugfast.allowance import CapBroker, Ledger, block_size


def test_a_grant_covers_what_is_needed_and_at_least_a_block_while_slots_last() -> None:
    ledger = Ledger(1000, 2)
    assert ledger.block == block_size(1000, 2) == 62
    assert ledger.grant(0) == 62
    assert ledger.grant(1, need=500) == 500
    assert ledger.grant(0, need=900) == 1000 - 562
    assert ledger.free == 0 and ledger.grant(1) == 0
    ledger.returned(1, 100)
    assert ledger.free == 100


class Broker:
    """A CapBroker whose answers and requests to give back are written down."""

    def __init__(self, cap: int, workers: int) -> None:
        self.grants: list[tuple[int, int, int]] = []
        self.asked: list[int] = []
        self.broker = CapBroker(cap, workers, lambda *grant: self.grants.append(grant), self.asked.append)


def test_when_nothing_is_free_the_others_give_back_before_the_answer() -> None:
    b = Broker(10, 2)
    broker = b.broker
    broker.acquire(0, 1, need=10, others=[0, 1])
    assert b.grants == [(0, 1, 10)]
    round_ = broker.acquire(1, 7, need=3, others=[0, 1])
    assert round_ is not None and b.asked == [0] and len(b.grants) == 1
    # A request that comes during the round waits for its end too.
    assert broker.acquire(1, 8, need=1, others=[0, 1]) is None
    broker.given_back(0, 4)
    assert b.grants[1:] == [(1, 7, 3), (1, 8, 1)]
    assert broker.ledger.held == [6, 4]


def test_a_late_timer_ends_no_later_round() -> None:
    b = Broker(2, 2)
    broker = b.broker
    broker.acquire(0, 1, need=2, others=[0, 1])
    first = broker.acquire(1, 2, need=1, others=[0, 1])
    broker.end_round(first)  # the timer: worker 0 did not answer in time
    assert b.grants[-1] == (1, 2, 0)
    second = broker.acquire(1, 3, need=1, others=[0, 1])
    assert second != first
    broker.end_round(first)  # a stale timer: nothing happens
    assert b.grants[-1] == (1, 2, 0)
    broker.given_back(0, 1)
    assert b.grants[-1] == (1, 3, 1)


def test_a_lost_worker_is_not_waited_for_and_its_share_is_freed_when_it_ends() -> None:
    b = Broker(4, 3)
    broker = b.broker
    broker.acquire(0, 1, need=4, others=[0, 1, 2])
    round_ = broker.acquire(2, 5, need=2, others=[0, 1, 2])
    assert round_ is not None and sorted(b.asked) == [0, 1]
    broker.given_back(1, 0)
    broker.lost(0)  # its channel is gone: the round ends without it...
    assert b.grants[-1] == (2, 5, 0)  # ...but what it holds is counted until it ends
    broker.forget(0)
    assert broker.ledger.free == 4


def test_a_lost_workers_own_requests_are_void() -> None:
    b = Broker(1, 2)
    broker = b.broker
    broker.acquire(1, 1, need=1, others=[0, 1])
    broker.acquire(0, 2, need=1, others=[0, 1])  # a round: worker 1 is asked
    broker.lost(0)
    broker.given_back(1, 0)
    assert all(grant[0] != 0 for grant in b.grants)
