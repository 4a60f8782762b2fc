"""The lease's local bookkeeping (node/leases.py) on an in-memory store and a hand-driven clock."""

from __future__ import annotations

from typing import Any

import pytest

from node.leases import Lease
from tests.unit.chain.fakes import InMemoryLeaseStore


class Clocks:
    """One hand-driven time for the store's wall clock and the nodes' monotonic clocks."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lease(store: InMemoryLeaseStore, clock: Clocks, holder: str, **kw: Any) -> Lease:
    return Lease(store, "chain:w", holder, ttl=5.0, renew_every=1.5, monotonic=clock, **kw)


async def test_held_for_the_ttl_from_the_start_of_the_acquire() -> None:
    clock = Clocks()
    store = InMemoryLeaseStore(clock)
    a = lease(store, clock, "A")
    assert not a.held
    assert await a.renew()
    clock.now += 3.0
    assert a.valid_for() == pytest.approx(2.0)
    clock.now += 2.5
    assert not a.held  # not renewed: gone, whatever the store says


async def test_a_node_paused_past_the_ttl_knows_it_lost_the_lease() -> None:
    clock = Clocks()
    store = InMemoryLeaseStore(clock)
    a, b = lease(store, clock, "A"), lease(store, clock, "B")
    assert await a.step() and not await b.step()
    clock.now += 6.0  # A is paused (SIGSTOP, GC...) past the lease time
    assert await b.step()  # B takes over
    assert not a.held
    assert not await a.confirm(margin=1.0)  # A's fencing check fails: it must not send
    assert store.rows["chain:w"].holder == "B"


async def test_confirm_needs_the_margin_even_when_the_store_answers_slowly() -> None:
    clock = Clocks()

    class SlowStore(InMemoryLeaseStore):
        async def acquire(self, name: str, holder: str, ttl: float) -> bool:
            clock.now += 3.0  # the answer takes 3 s: most of the lease is spent already
            return await super().acquire(name, holder, ttl)

    a = lease(SlowStore(clock), clock, "A")
    assert await a.confirm(margin=1.0)
    assert not await a.confirm(margin=2.5)


async def test_a_store_error_keeps_the_lease_only_until_it_runs_out_locally() -> None:
    clock = Clocks()
    store = InMemoryLeaseStore(clock)
    changes: list[bool] = []

    async def on_change(held: bool) -> None:
        changes.append(held)

    a = lease(store, clock, "A", on_change=on_change)
    assert await a.step()
    store.fail = True
    clock.now += 1.5
    assert await a.step()  # the store did not answer: still ours for 3.5 s
    clock.now += 4.0
    assert not await a.step()
    assert changes == [True, False]
    store.fail = False
    assert await a.step()
    assert changes == [True, False, True]


async def test_release_hands_the_lease_over_without_waiting_for_expiry() -> None:
    clock = Clocks()
    store = InMemoryLeaseStore(clock)
    a, b = lease(store, clock, "A"), lease(store, clock, "B")
    assert await a.step()
    await a.release()
    assert not a.held
    assert await b.step()


def test_renewal_must_be_more_frequent_than_expiry() -> None:
    with pytest.raises(ValueError, match="renewed more often"):
        Lease(InMemoryLeaseStore(Clocks()), "x", "A", ttl=1.0, renew_every=1.0)


async def test_gained_counts_each_time_the_lease_is_held_again_after_running_out() -> None:
    clock = Clocks()
    store = InMemoryLeaseStore(clock)
    a = lease(store, clock, "A")
    assert await a.renew() and a.gained == 1  # first taken
    clock.now += 3.0
    assert await a.renew() and a.gained == 1  # renewed in time: the same holding
    clock.now += 6.0  # ran out (nobody took it meanwhile, but someone could have)
    assert await a.renew() and a.gained == 2
