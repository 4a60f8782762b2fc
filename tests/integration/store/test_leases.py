"""The lease primitive on a real SQLite file and a real PostgreSQL server (conftest.store_url)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from node.leases import Lease
from node.store.engine import create_engine, migrate
from node.store.leases import SqlLeaseStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def engines(store_url: str) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    """Two engines on one database: two nodes, each with its own connections."""
    first, second = create_engine(store_url), create_engine(store_url)
    await migrate(first)
    yield first, second
    await first.dispose()
    await second.dispose()


async def test_two_nodes_racing_exactly_one_wins(engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    clock = Clock()
    stores = [SqlLeaseStore(engine, clock) for engine in engines]
    for _ in range(5):
        name = f"chain:race-{_}"
        results = await asyncio.gather(
            *(stores[i % 2].acquire(name, f"node-{i}", 5.0) for i in range(8)), return_exceptions=True
        )
        assert not [r for r in results if isinstance(r, BaseException)], results
        assert sum(1 for r in results if r is True) == 1
        [info] = await stores[0].live(name)
        assert info.holder == f"node-{results.index(True)}"


async def test_only_the_holder_renews_and_expiry_hands_it_over(engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    clock = Clock()
    a, b = SqlLeaseStore(engines[0], clock), SqlLeaseStore(engines[1], clock)
    assert await a.acquire("chain:0xabc", "A", 5.0)
    taken_at = clock.now
    clock.now += 4.0
    assert not await b.acquire("chain:0xabc", "B", 5.0)  # not expired: B may not take it
    assert await a.acquire("chain:0xabc", "A", 5.0)  # A renews: now until +9
    clock.now += 4.5
    assert not await b.acquire("chain:0xabc", "B", 5.0)  # renewed, so still A's
    [info] = await b.live("chain:")
    assert (info.holder, info.acquired_at, info.expires_at) == ("A", taken_at, taken_at + 9.0)
    clock.now += 1.0  # past A's expiry
    assert await b.live("chain:") == []
    assert await b.acquire("chain:0xabc", "B", 5.0)
    assert not await a.acquire("chain:0xabc", "A", 5.0)  # A's renewal comes too late
    [info] = await a.live("chain:")
    assert (info.holder, info.acquired_at) == ("B", clock.now)


async def test_release_by_the_holder_only(engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    clock = Clock()
    a, b = SqlLeaseStore(engines[0], clock), SqlLeaseStore(engines[1], clock)
    assert await a.acquire("chain:w", "A", 5.0)
    await b.release("chain:w", "B")  # not B's: nothing happens
    assert not await b.acquire("chain:w", "B", 5.0)
    await a.release("chain:w", "A")
    assert await b.acquire("chain:w", "B", 5.0)


async def test_live_filters_by_prefix_literally(engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    clock = Clock()
    store = SqlLeaseStore(engines[0], clock)
    for name in ("node:a", "node:b", "nodeX", "chain:w"):
        assert await store.acquire(name, name, 5.0)
    assert [info.name for info in await store.live("node:")] == ["node:a", "node:b"]
    assert [info.name for info in await store.live("no%")] == []


async def test_lease_loop_hands_over_when_the_leader_stops_renewing(engines: tuple[AsyncEngine, AsyncEngine]) -> None:
    """Two Lease loops on the real store with real time: one leads; when it stops, the other takes over."""
    changes: list[tuple[str, bool]] = []

    def leases(name: str, engine: AsyncEngine) -> Lease:
        async def on_change(held: bool) -> None:
            changes.append((name, held))

        return Lease(SqlLeaseStore(engine), "chain:real", name, ttl=1.0, renew_every=0.2, on_change=on_change)

    a, b = leases("A", engines[0]), leases("B", engines[1])
    assert await a.step() and not await b.step()
    loop = asyncio.get_running_loop()
    stopped = loop.time()
    while not await b.step():  # A is "dead": it no longer renews
        assert loop.time() - stopped < 5.0
        await asyncio.sleep(0.1)
    assert loop.time() - stopped >= 0.5  # not before A's lease ran out
    assert changes == [("A", True), ("B", True)]
    assert not await a.step()
    assert changes[-1] == ("A", False)
