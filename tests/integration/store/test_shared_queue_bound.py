"""The job queue's bound shared by several nodes on one real PostgreSQL server (migration 0007).

Each repository has its own engine (its own connections and group commit), as two node
processes would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from sqlalchemy import func, select, text

from node.jobs.errors import Overloaded
from node.jobs.model import ContainerResult, Job, JobOrigin, JobStatus, new_job_id
from node.store.limit_tables import job_slots
from node.store.server_jobs import ServerJobRepository
from node.store.tables import jobs
from tests.integration.store.conftest import ServerNodes

Node = Callable[..., ServerJobRepository]
BOUND = 20


@pytest.fixture
def node(server_nodes: ServerNodes) -> Node:
    """node(id, queue_size): a repository with an engine of its own (and no heartbeat), on one fresh database."""
    return lambda owner, queue_size=BOUND: server_nodes(owner, queue_size)


def job(status: JobStatus = JobStatus.QUEUED, origin: JobOrigin = JobOrigin.OFFCHAIN) -> Job:
    now = time.time()
    return Job(new_job_id(), "1.1.1.1", ["a"], {"n": 1}, origin=origin, status=status, created_at=now, updated_at=now)


async def counts(repository: ServerJobRepository) -> tuple[int, int]:
    """(the slot counter, the pending jobs it stands for, counted the slow way)."""
    pending = select(func.count()).where(
        jobs.c.status.in_(["queued", "running"]), jobs.c.origin.in_(["offchain", "stream", "model"])
    )
    async with repository._engine.connect() as connection:
        used = (await connection.execute(select(job_slots.c.used).where(job_slots.c.scope == "*"))).scalar_one()
        return int(used), int((await connection.execute(pending)).scalar_one())


async def test_concurrent_accepts_on_two_nodes_stop_exactly_at_the_bound(node: Node) -> None:
    a, b = node("node-a"), node("node-b")

    async def accept(repository: ServerJobRepository, item: Job) -> bool:
        try:
            await repository.add(item)
        except Overloaded as refused:
            assert refused.retry_after > 0 and refused.params == {"limit": BOUND}
            return False
        return True

    for repository in (a, b):  # connected first, so that neither node's first commit waits for it
        await repository.get_many("1.1.1.1", ["none"])
    # Rounds of 7 jobs on each node at once: each node commits its 7 as a group while the other
    # does; the bound (20) falls inside the second round, where the two commits race for the rest.
    accepted: dict[str, list[bool]] = {"a": [], "b": []}
    for _ in range(4):
        round_a, round_b = [job() for _ in range(7)], [job() for _ in range(7)]
        results = await asyncio.gather(*(accept(a, item) for item in round_a), *(accept(b, item) for item in round_b))
        accepted["a"] += results[:7]
        accepted["b"] += results[7:]
    assert sum(accepted["a"]) + sum(accepted["b"]) == BOUND
    assert sum(accepted["a"][:7]) == sum(accepted["b"][:7]) == 7  # both nodes took jobs
    assert await counts(a) == (BOUND, BOUND)


async def test_a_finished_job_frees_its_slot_for_any_node(node: Node) -> None:
    a, b = node("node-a"), node("node-b")
    first = [job() for _ in range(BOUND)]
    assert await a.add_many(first) == BOUND
    with pytest.raises(Overloaded):
        await b.add(job())
    await a.mark_running(first[0].key)  # still pending
    with pytest.raises(Overloaded):
        await b.add(job())
    await a.finish(first[0].key, JobStatus.SUCCESS, ContainerResult("a", output=1), [])
    await b.add(job())
    with pytest.raises(Overloaded):
        await a.add(job())
    assert await counts(a) == (BOUND, BOUND)


async def test_a_batch_stores_the_jobs_that_fit(node: Node) -> None:
    a, b = node("node-a"), node("node-b")
    assert await a.add_many([job() for _ in range(BOUND - 3)]) == BOUND - 3
    batch = [job() for _ in range(5)]
    assert await b.add_many(batch) == 3
    stored = await b.get_many("1.1.1.1", [item.id for item in batch])
    assert {item.id for item in stored} == {item.id for item in batch[:3]}
    assert await counts(a) == (BOUND, BOUND)


async def test_every_path_that_ends_a_pending_job_keeps_the_count(node: Node) -> None:
    dead, alive = node("node-a"), node("node-b")  # no heartbeats here: node-a counts as dead
    running, queued, other = job(JobStatus.RUNNING), job(), job()
    await dead.add_many([running, queued])
    await alive.add(other)
    # Recorded jobs (PUT /api/status) never count, even pending; replacing a pending job ends it.
    recorded = job(JobStatus.RUNNING, JobOrigin.RECORDED)
    await alive.record(recorded)
    assert await counts(alive) == (3, 3)
    replaced = job(JobStatus.SUCCESS, JobOrigin.RECORDED)
    replaced.id = other.id
    await alive.record(replaced)
    assert await counts(alive) == (2, 2)
    # A dead node's jobs: the running one fails (its slot is freed), the queued one moves.
    claimed = await alive.claim(room=10, retryable=frozenset())
    assert (len(claimed.queued), claimed.failed) == (1, 1)
    assert await counts(alive) == (1, 1)
    await alive.finish(queued.key, JobStatus.FAILED, ContainerResult("a", error="x"), [])
    assert await alive.prune(time.time() + 1) == 3
    assert await counts(alive) == (0, 0)
    # Rows deleted or changed behind the node's back (an operator's SQL) are counted as well.
    await alive.add_many([job(), job()])
    async with alive._engine.begin() as connection:
        await connection.execute(text("DELETE FROM jobs WHERE status = 'queued'"))
    assert await counts(alive) == (0, 0)


async def test_without_a_bound_nothing_is_refused(node: Node) -> None:
    a = node("node-a", queue_size=None)
    assert await a.add_many([job() for _ in range(BOUND + 5)]) == BOUND + 5
    assert await counts(a) == (BOUND + 5, BOUND + 5)


async def test_concurrent_accepts_in_one_statement_store_the_first_that_fit(node: Node) -> None:
    a = node("node-a")
    running = job(JobStatus.RUNNING)
    await a.add_many([running, *(job() for _ in range(BOUND - 2))])  # one slot left
    sent: list[str] = []
    a._batcher._server._driver.add_query_logger(lambda query: sent.append(query.query))
    # One batch, one statement: five new jobs, and a finish whose slot frees only as it commits.
    items = [job() for _ in range(5)]
    finish = a.finish(running.key, JobStatus.SUCCESS, ContainerResult("a", output=1), [])
    results = await asyncio.gather(*(a.add(item) for item in items), finish, return_exceptions=True)
    assert len(sent) == 1 and sent[0].startswith("WITH room(n) AS MATERIALIZED"), sent
    assert results[0] is None and results[-1] is None, results
    assert all(isinstance(result, Overloaded) for result in results[1:-1]), results
    assert await counts(a) == (BOUND - 1, BOUND - 1)
    assert [item.id for item in await a.get_many("1.1.1.1", [item.id for item in items])] == [items[0].id]
