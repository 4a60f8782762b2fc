"""PostgreSQL's group commit on asyncpg directly (node/store/server_writer.py), on a real server.

The batcher hands it batches of the repository's own statements; what it writes must read back
through the repository exactly, and its failures must reach faults.py as the
domain errors the SQLAlchemy path gives.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import exc as sa_exc

from node.jobs.errors import StoreUnavailable
from node.jobs.model import ContainerResult, Job, JobStatus, new_job_id
from node.store.engine import create_engine, migrate
from node.store.faults import translate
from node.store.jobs_sql import INSERT, to_row
from node.store.server_jobs import ServerJobRepository
from node.store.server_writer import ServerWriter, Write
from tests.support.postgres import drop_connections, fresh_database


@pytest.fixture
async def store(postgres_server: str) -> AsyncIterator[tuple[ServerJobRepository, str]]:
    async with fresh_database(postgres_server) as url:
        engine = create_engine(url)
        await migrate(engine)
        repository = ServerJobRepository(engine, "node-a")
        try:
            yield repository, url
        finally:
            await repository.close()
            await engine.dispose()


def job(n: int, status: JobStatus = JobStatus.QUEUED) -> Job:
    now = time.time()
    return Job(new_job_id(), "1.1.1.1", ["a"], {"n": n}, status=status, created_at=now, updated_at=now)


async def test_a_batch_of_several_statements_reads_back_as_written(store: tuple[ServerJobRepository, str]) -> None:
    repository, _ = store
    first, second = job(1), job(2, JobStatus.RUNNING)
    await repository.add_many([first, second])
    # Concurrent writes of different statements: one batch, one transaction.
    await asyncio.gather(
        repository.mark_running(first.key),
        repository.finish(second.key, JobStatus.SUCCESS, ContainerResult("a", output={"ok": True}), []),
        repository.add(job(3)),
    )
    found = {item.id: item for item in await repository.get_many("1.1.1.1", [first.id, second.id])}
    assert found[first.id].status is JobStatus.RUNNING
    assert found[second.id].status is JobStatus.SUCCESS
    assert found[second.id].result == ContainerResult("a", output={"ok": True})
    assert found[second.id].data == {"n": 2} and found[second.id].requires_proof is False


async def test_a_bad_write_fails_alone_as_sqlalchemy_reports_it(store: tuple[ServerJobRepository, str]) -> None:
    repository, _ = store
    taken = job(1)
    await repository.add(taken)
    fresh = job(2)
    results = await asyncio.gather(repository.add(taken), repository.add(fresh), return_exceptions=True)
    assert isinstance(results[0], sa_exc.IntegrityError)  # the same key again: a bug, not a store outage
    assert translate(results[0]) is None
    assert results[1] is None  # its neighbour in the batch is written on its own
    assert [item.id for item in await repository.get_many("1.1.1.1", [fresh.id])] == [fresh.id]


async def test_a_connection_the_server_dropped_is_store_unavailable_then_replaced(
    store: tuple[ServerJobRepository, str], postgres_server: str
) -> None:
    _, url = store
    engine = create_engine(url)
    writer = ServerWriter(engine)
    try:
        await writer.commit([Write(INSERT, [to_row(job(1))])])
        await drop_connections(postgres_server, url)
        with pytest.raises(sa_exc.OperationalError) as raised:
            await writer.commit([Write(INSERT, [to_row(job(2))])])
        assert isinstance(translate(raised.value), StoreUnavailable)
        await writer.commit([Write(INSERT, [to_row(job(3))])])  # a new connection
    finally:
        await writer.close()
        await engine.dispose()


async def test_reads_by_id_on_asyncpg_a_dropped_connection_is_store_unavailable(
    store: tuple[ServerJobRepository, str], postgres_server: str
) -> None:
    """get_many runs on asyncpg directly too: the pool's connection the server ended is a 503, once."""
    repository, url = store
    stored = job(1)
    await repository.add(stored)
    [found] = await repository.get_many("1.1.1.1", [stored.id, "missing"])
    assert found.id == stored.id and found.data == {"n": 1}
    await drop_connections(postgres_server, url)
    with pytest.raises(StoreUnavailable):
        await repository.get_many("1.1.1.1", [stored.id])
    assert [item.id for item in await repository.get_many("1.1.1.1", [stored.id])] == [stored.id]


# -- a batch in one statement (node/store/one_statement.py) ------------------------------


def statements_logged(repository: ServerJobRepository) -> list[str]:
    """The statements the repository's writer sends from now on (asyncpg's query logger)."""
    sent: list[str] = []
    driver = repository._batcher._server._driver
    assert driver is not None, "write once first: the writer connects on its first batch"
    driver.add_query_logger(lambda query: sent.append(query.query))
    return sent


async def test_a_batch_of_every_kind_of_write_is_one_statement(store: tuple[ServerJobRepository, str]) -> None:
    repository, _ = store
    first, second = job(1), job(2, JobStatus.RUNNING)
    await repository.add_many([first, second])
    sent = statements_logged(repository)
    recorded = job(4)
    await asyncio.gather(
        repository.add(job(3)),
        repository.mark_running(first.key),
        repository.finish(second.key, JobStatus.FAILED, ContainerResult("a", error="boom"), []),
        repository.record(recorded),
        repository.add(job(5)),
    )
    assert len(sent) == 1 and sent[0].startswith("WITH w0 AS (INSERT"), sent
    found = {item.id: item for item in await repository.get_many("1.1.1.1", [first.id, second.id, recorded.id])}
    assert found[first.id].status is JobStatus.RUNNING
    assert found[second.id].status is JobStatus.FAILED
    assert found[second.id].result == ContainerResult("a", error="boom")
    assert found[recorded.id].data == {"n": 4}
    assert len(await repository.list_ids("1.1.1.1", pending=True)) == 4  # 1, 3, 5 and the recorded 4


async def test_a_row_written_twice_in_a_batch_is_written_in_order(store: tuple[ServerJobRepository, str]) -> None:
    repository, _ = store
    await repository.add(job(0))
    sent = statements_logged(repository)
    first = job(1, JobStatus.RUNNING)
    last = job(2, JobStatus.SUCCESS)
    last.id = first.id
    await asyncio.gather(repository.record(first), repository.record(last))
    # Write by write (one executemany here): one statement would write the row once, either way.
    assert sent and not any(query.startswith("WITH") for query in sent), sent
    [found] = await repository.get_many("1.1.1.1", [first.id])
    assert found.status is JobStatus.SUCCESS and found.data == {"n": 2}
