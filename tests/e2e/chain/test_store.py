"""The chain tables on real SQLite: migration 0002 and the repository the processor relies on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import AsyncEngine

from node.chain.records import DelegatedRecord, DelegatedStatus, DeliveryStatus
from node.store.chain_repository import SqlChainRepository
from node.store.engine import create_engine, migrate


@pytest_asyncio.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'node.db'}")
    await migrate(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


def _record(nonce: int = 7) -> DelegatedRecord:
    return DelegatedRecord(
        owner="0xabcdef0123456789abcdef0123456789abcdef01",
        nonce=nonce,
        subscription={"owner": "0xAbCdEf0123456789abcdef0123456789abcdef01", "payment_amount": 2**256 - 1},
        signature={"nonce": nonce, "expiry": 2**32 - 1, "v": 27, "r": 2**255 + 1, "s": 12345},
        data={"input": "ünïcode", "n": [1, 2]},
        signer="0x5ce9454909639D2D17A3F753ce7d93fa0b9aB12E",
    )


async def test_migration_creates_the_chain_tables_and_is_idempotent(engine: AsyncEngine) -> None:
    await migrate(engine)
    async with engine.connect() as connection:
        tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    assert {"jobs", "chain_delegated", "chain_deliveries"} <= tables


async def test_delegated_subscriptions_round_trip_with_uint256_values(engine: AsyncEngine) -> None:
    repository = SqlChainRepository(engine)
    assert await repository.add_delegated(_record())
    assert not await repository.add_delegated(_record())  # (owner, nonce) is stored once
    (stored,) = await repository.open_delegated()
    assert stored.signature["r"] == 2**255 + 1 and stored.subscription["payment_amount"] == 2**256 - 1
    assert stored.data == {"input": "ünïcode", "n": [1, 2]} and stored.status is DelegatedStatus.ACCEPTED

    await repository.set_delegated(stored.owner.upper().replace("0X", "0x"), 7, DelegatedStatus.TRACKING)
    assert (await repository.open_delegated())[0].status is DelegatedStatus.TRACKING
    await repository.set_delegated(stored.owner, 7, DelegatedStatus.DELIVERED, subscription_id=2**32 - 1)
    assert await repository.open_delegated() == []
    done = await repository.get_delegated(stored.owner, 7)
    assert done is not None and done.subscription_id == 2**32 - 1 and done.status is DelegatedStatus.DELIVERED


async def test_delivery_lifecycle_counts_failed_attempts(engine: AsyncEngine) -> None:
    repository = SqlChainRepository(engine)
    record = await repository.begin_delivery("sub:4", 2, 4)
    assert (record.status, record.attempts) == (DeliveryStatus.RUNNING, 0)
    assert await repository.finish_delivery("sub:4", 2, DeliveryStatus.FAILED, "boom", failed_attempt=True) == 1
    record = await repository.begin_delivery("sub:4", 2, 4)
    assert (record.status, record.attempts) == (DeliveryStatus.RUNNING, 1)
    await repository.record_sent("sub:4", 2, "0x" + "ab" * 32, 17)
    (open_row,) = await repository.open_deliveries()
    assert (open_row.status, open_row.tx_hash, open_row.tx_nonce) == (DeliveryStatus.SENT, "0x" + "ab" * 32, 17)
    # A sent transaction is never overwritten by a new attempt: its receipt decides.
    assert (await repository.begin_delivery("sub:4", 2, 4)).status is DeliveryStatus.SENT
    assert await repository.finish_delivery("sub:4", 2, DeliveryStatus.DELIVERED) == 1
    assert await repository.open_deliveries() == []
    assert (await repository.begin_delivery("sub:4", 2, 4)).status is DeliveryStatus.DELIVERED


@pytest.mark.parametrize("status", [DeliveryStatus.RUNNING, DeliveryStatus.SENT])
async def test_open_deliveries_survive_a_new_engine(tmp_path: Path, status: DeliveryStatus) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'node.db'}"
    first = create_engine(url)
    await migrate(first)
    await SqlChainRepository(first).begin_delivery("del:0xab:1", 1, None)
    if status is DeliveryStatus.SENT:
        await SqlChainRepository(first).record_sent("del:0xab:1", 1, "0x" + "01" * 32, 0)
    await first.dispose()
    second = create_engine(url)
    await migrate(second)
    try:
        (row,) = await SqlChainRepository(second).open_deliveries()
        assert row.status is status and row.sub_key == "del:0xab:1"
    finally:
        await second.dispose()
