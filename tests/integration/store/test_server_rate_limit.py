"""The per-IP rate limit kept in a real PostgreSQL store, shared by several nodes (migration 0007)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy import func, select

from node.store.engine import create_engine, migrate
from node.store.limit_tables import rate_windows
from node.store.server_rate_limit import ServerRateLimit
from tests.support.postgres import fresh_database

RATE, PERIOD = 10, 60.0
T0 = 1_800_000_000.0  # the start of a window (a multiple of PERIOD)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


Limits = Callable[[], ServerRateLimit]


@pytest.fixture
async def clock() -> Clock:
    return Clock()


@pytest.fixture
async def limits(postgres_server: str, clock: Clock) -> AsyncIterator[Limits]:
    """limits(): one node's view of the shared counters, with an engine of its own."""
    engines = []
    async with fresh_database(postgres_server) as url:
        first = create_engine(url)
        await migrate(first)
        await first.dispose()

        def make() -> ServerRateLimit:
            engine = create_engine(url)
            engines.append(engine)
            return ServerRateLimit(engine, RATE, PERIOD, clock)

        yield make
        for engine in engines:
            await engine.dispose()


async def test_two_nodes_admit_exactly_the_rate_per_window(limits: Limits, clock: Clock) -> None:
    a, b = limits(), limits()
    clock.now = T0 + 15
    waits = await asyncio.gather(*(node.admit("10.0.0.1", "/api/jobs") for node in [a, b] * (2 * RATE)))
    assert sum(1 for wait in waits if wait == 0) == RATE
    assert {wait for wait in waits if wait} == {PERIOD - 15}  # until the window ends
    # Other clients and other routes have windows of their own.
    assert await a.admit("10.0.0.2", "/api/jobs") == 0
    assert await b.admit("10.0.0.1", "/api/jobs/batch") == 0
    # The next window admits again, on either node.
    clock.now = T0 + PERIOD
    assert await b.admit("10.0.0.1", "/api/jobs") == 0


async def test_refused_requests_do_not_count(limits: Limits, clock: Clock) -> None:
    a = limits()
    for _ in range(RATE):
        assert await a.admit("10.0.0.1", "/x") == 0
    for _ in range(5):
        assert await a.admit("10.0.0.1", "/x") > 0
    async with a._engine.connect() as connection:
        counted = (await connection.execute(select(rate_windows.c.requests))).scalar_one()
    assert counted == RATE


async def test_ended_windows_are_pruned(limits: Limits, clock: Clock) -> None:
    a = limits()
    await a.admit("10.0.0.1", "/x")
    await a.admit("10.0.0.2", "/x")
    assert await a.prune() == 0  # the window is still open
    clock.now = T0 + PERIOD
    await a.admit("10.0.0.1", "/x")
    assert await a.prune() == 2
    async with a._engine.connect() as connection:
        assert (await connection.execute(select(func.count()).select_from(rate_windows))).scalar_one() == 1


async def test_an_unreachable_store_lets_requests_through(caplog: pytest.LogCaptureFixture) -> None:
    engine = create_engine("postgresql+asyncpg://postgres@127.0.0.1:1/nowhere")  # nothing listens on port 1
    try:
        limits = ServerRateLimit(engine, 1, PERIOD)
        assert [await limits.admit("10.0.0.1", "/x") for _ in range(3)] == [0.0, 0.0, 0.0]
    finally:
        await engine.dispose()
    warnings = [record for record in caplog.records if "rate limit's store cannot be reached" in record.message]
    assert len(warnings) == 1  # once, not per request
