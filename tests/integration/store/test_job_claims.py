"""Job claims on a real PostgreSQL server: several repositories (nodes) on one database.

Each repository has its own engine (its own connections), as two node processes would, and
a heartbeat (the lease `node:<id>`) taken once, for `lease` seconds, as its cluster's loop would.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable

import pytest

from node.cluster import NODE_PREFIX
from node.jobs.model import ContainerResult, Job, JobOrigin, JobStatus, new_job_id
from node.jobs.ports import Claimed
from node.store.leases import SqlLeaseStore
from node.store.server_jobs import _LOCK_SLOTS, ServerJobRepository
from tests.integration.store.conftest import ServerNodes

LEASE = 0.5  # the nodes that die
LONG = 60.0  # the nodes that stay: these tests never renew their heartbeats
Node = Callable[..., Awaitable[ServerJobRepository]]


@pytest.fixture
def node(server_nodes: ServerNodes) -> Node:
    """await node(id, lease): a repository claiming as `id`, with an engine of its own and a heartbeat
    live for `lease` seconds (None: none), on one fresh database."""

    async def make(owner: str, lease: float | None = LONG) -> ServerJobRepository:
        repository = server_nodes(owner)
        if lease is not None:
            assert await SqlLeaseStore(repository._engine).acquire(NODE_PREFIX + owner, owner, lease)
        return repository

    return make


def job(status: JobStatus = JobStatus.QUEUED, containers: list[str] | None = None, n: int = 0) -> Job:
    now = time.time()
    return Job(new_job_id(), "1.1.1.1", containers or ["a"], {"n": n}, status=status, created_at=now, updated_at=now)


async def expire() -> None:
    await asyncio.sleep(LEASE + 0.1)


async def test_concurrent_claims_take_each_job_exactly_once(node: Node) -> None:
    dead = await node("dead", LEASE)
    queued = [job(n=n) for n in range(300)]
    await dead.add_many(queued)
    await expire()
    claimers = [await node(f"alive-{index}") for index in range(4)]
    taken: list[list[Job]] = [[] for _ in claimers]

    async def claim_all(index: int) -> None:
        while True:
            claimed = await claimers[index].claim(room=10_000, retryable=frozenset(), batch=7)
            if not claimed.queued:
                return
            taken[index] += claimed.queued
            await asyncio.sleep(0)

    await asyncio.gather(*(claim_all(index) for index in range(len(claimers))))
    counts = Counter(item.id for items in taken for item in items)
    assert set(counts) == {item.id for item in queued}
    assert max(counts.values()) == 1, [job_id for job_id, count in counts.items() if count > 1]
    assert sum(1 for items in taken if items) >= 2, "one node took everything: the claims never ran concurrently"
    # The store agrees: each job is queued, owned by the node that claimed it.
    for index, items in enumerate(taken):
        if items:
            assert await claimers[index].owned([item.key for item in items]) == {item.key for item in items}


async def test_running_jobs_of_a_dead_node_fail_once_with_the_reason(node: Node) -> None:
    dead = await node("node-a", LEASE)
    running = [job(JobStatus.RUNNING, n=n) for n in range(20)]
    await dead.add_many(running)
    await expire()
    claimers = [await node("node-b"), await node("node-c")]
    first, second = await asyncio.gather(*(c.claim(room=100, retryable=frozenset()) for c in claimers))
    assert first.queued == second.queued == []
    assert first.failed + second.failed == 20
    stored = await claimers[0].get_many("1.1.1.1", [item.id for item in running])
    assert {item.status for item in stored} == {JobStatus.FAILED}
    assert {item.result.error for item in stored if item.result} == {"node node-a died while the job was running"}
    # The dead node's late result changes nothing: the job is no longer its.
    await dead.finish(running[0].key, JobStatus.SUCCESS, ContainerResult("a", output=1), [])
    [after] = await claimers[0].get_many("1.1.1.1", [running[0].id])
    assert after.status is JobStatus.FAILED


async def test_interrupted_jobs_safe_to_retry_run_again_elsewhere(node: Node) -> None:
    dead = await node("node-a", LEASE)
    safe = job(JobStatus.RUNNING, containers=["safe", "safe2"])
    half = job(JobStatus.RUNNING, containers=["safe", "unsafe"])  # the whole chain must be safe
    await dead.add_many([safe, half])
    await expire()
    alive = await node("node-b")
    claimed = await alive.claim(room=100, retryable=frozenset({"safe", "safe2"}))
    assert [item.id for item in claimed.queued] == [safe.id]
    assert claimed.queued[0].status is JobStatus.QUEUED
    assert (claimed.rerun, claimed.failed) == (1, 1)
    assert await alive.owned([safe.key]) == {safe.key}
    # Now node-b's: it runs and finishes it.
    await alive.mark_running(safe.key)
    await alive.finish(safe.key, JobStatus.SUCCESS, ContainerResult("safe2", output=2), [])
    [done] = await alive.get_many("1.1.1.1", [safe.id])
    assert done.status is JobStatus.SUCCESS


async def test_a_live_node_keeps_its_jobs(node: Node) -> None:
    owner, other = await node("node-a", LEASE), await node("node-b")
    heartbeat = SqlLeaseStore(owner._engine)
    jobs = [job(), job(JobStatus.RUNNING)]
    await owner.add_many(jobs)
    for _ in range(4):  # twice the lease, renewed every half: one row, whatever the backlog
        await asyncio.sleep(LEASE / 2)
        assert await heartbeat.acquire(NODE_PREFIX + "node-a", "node-a", LEASE)
        claimed = await other.claim(room=100, retryable=frozenset())
        assert (claimed.queued, claimed.failed) == ([], 0)
    assert await owner.owned([item.key for item in jobs]) == {item.key for item in jobs}


async def test_a_released_heartbeat_hands_every_pending_job_over_at_once(node: Node) -> None:
    leaving, staying = await node("node-a"), await node("node-b")
    queued, running = job(), job(JobStatus.RUNNING)
    await leaving.add_many([queued, running])
    await SqlLeaseStore(leaving._engine).release(NODE_PREFIX + "node-a", "node-a")  # Cluster.close
    claimed = await staying.claim(room=10, retryable=frozenset())
    assert [item.id for item in claimed.queued] == [queued.id] and claimed.failed == 1


async def test_jobs_of_an_owner_that_never_had_a_heartbeat_are_claimed(node: Node) -> None:
    """Pending jobs from before migration 0006 belong to 'before-upgrade', a node that never beat."""
    ghost, alive = await node("before-upgrade", lease=None), await node("node-b")
    await ghost.add_many([job()])
    assert len((await alive.claim(room=10, retryable=frozenset())).queued) == 1


async def test_a_claim_waits_for_nothing_while_every_owner_lives(node: Node) -> None:
    """The usual beat reads who is gone and locks nothing: a commit of new jobs holding the
    count of pending jobs does not hold it up."""
    owner, other = await node("node-a"), await node("node-b")
    await owner.add_many([job(n=n) for n in range(50)])
    async with owner._engine.begin() as connection:
        await connection.execute(_LOCK_SLOTS)
        claimed = await asyncio.wait_for(other.claim(room=100, retryable=frozenset()), timeout=5)
    assert claimed == Claimed()


async def test_room_limits_what_is_claimed_and_the_rest_waits(node: Node) -> None:
    dead, alive = await node("node-a", LEASE), await node("node-b")
    await dead.add_many([job(n=n) for n in range(5)])
    await expire()
    assert len((await alive.claim(room=2, retryable=frozenset())).queued) == 2
    assert len((await alive.claim(room=10, retryable=frozenset())).queued) == 3


async def test_a_clean_stop_hands_queued_jobs_over_at_once(node: Node) -> None:
    leaving, staying = await node("node-a"), await node("node-b")
    queued, running = job(), job(JobStatus.RUNNING)
    await leaving.add_many([queued, running])
    assert await leaving.release_queued() == 1
    claimed = await staying.claim(room=10, retryable=frozenset())  # no wait for the lease
    assert [item.id for item in claimed.queued] == [queued.id] and claimed.failed == 0


async def test_a_restart_under_the_same_id_recovers_at_once(node: Node) -> None:
    before = await node("node-a")
    queued, running = job(), job(JobStatus.RUNNING)
    await before.add_many([queued, running])
    after = await node("node-a")  # the same node id, started again: its leases have not run out
    claimed = await after.claim(
        room=10, retryable=frozenset(), restart_reason="node restarted while the job was running"
    )
    assert [item.id for item in claimed.queued] == [queued.id] and claimed.failed == 1
    [failed] = await after.get_many("1.1.1.1", [running.id])
    assert failed.result is not None and failed.result.error == "node restarted while the job was running"


async def test_recorded_jobs_are_nobody_s_to_claim(node: Node) -> None:
    recorder, other = await node("node-a"), await node("node-b")
    recorded = job()
    recorded.origin = JobOrigin.RECORDED
    await recorder.record(recorded)
    await expire()
    assert (await other.claim(room=10, retryable=frozenset())).queued == []


async def test_a_job_recorded_over_a_pending_one_keeps_no_owner(node: Node) -> None:
    """PUT /api/status over a gone node's pending job: the job is nobody's now, and the claims
    (which read the owners of jobs in flight) see no one gone: nothing to lock."""
    gone, other = await node("node-a", lease=None), await node("node-b")
    pending = job()
    await gone.add_many([pending])
    recorded = job(JobStatus.RUNNING)
    recorded.id, recorded.origin = pending.id, JobOrigin.RECORDED
    await other.record(recorded)
    async with other._engine.begin() as connection:
        await connection.execute(_LOCK_SLOTS)
        claimed = await asyncio.wait_for(other.claim(room=10, retryable=frozenset()), timeout=5)
    assert claimed == Claimed()
    [stored] = await other.get_many("1.1.1.1", [pending.id])
    assert stored.origin is JobOrigin.RECORDED and stored.status is JobStatus.RUNNING
