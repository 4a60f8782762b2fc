"""The claim keeper on an in-memory claims store and a real heartbeat lease (node/leases.py) on
an in-memory lease store: the gate on starting jobs, and what a node whose heartbeat ran out
gives up (node/jobs/claims.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from node.jobs.claims import ClaimKeeper
from node.jobs.model import Job, JobStatus
from node.jobs.ports import Claimed
from node.jobs.queue import JobQueue
from node.leases import Lease
from tests.unit.chain.fakes import InMemoryLeaseStore
from tests.unit.fakes import MemoryRepository, ScriptedGateway

LEASE, RENEW = 4.0, 1.0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class MemoryClaims:
    """Which jobs this node still owns, as another node's claims left them."""

    def __init__(self) -> None:
        self.owner = "node-a"
        self.taken_by_others: set[tuple[str, str]] = set()
        self.to_claim = Claimed()
        self.claims = 0

    async def owned(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        return set(keys) - self.taken_by_others

    async def release_queued(self) -> int:
        return 0

    async def claim(
        self, room: int, retryable: frozenset[str], restart_reason: str | None = None, batch: int = 500
    ) -> Claimed:
        self.claims += 1
        claimed, self.to_claim = self.to_claim, Claimed()
        return claimed


def job(n: int) -> Job:
    return Job(f"job-{n}", "1.1.1.1", ["a"], {"n": n})


class Node:
    """One node's queue, keeper and heartbeat, on a hand-driven clock."""

    def __init__(self, workers: int = 1) -> None:
        self.repository, self.gateway, self.claims, self.clock = (
            MemoryRepository(),
            ScriptedGateway(),
            MemoryClaims(),
            Clock(),
        )
        self.leases = InMemoryLeaseStore(self.clock)
        self.heartbeat = Lease(self.leases, "node:node-a", "node-a", LEASE, RENEW, monotonic=self.clock)
        self.queue = JobQueue(self.repository, self.gateway, workers, max_pending=10)
        self.keeper = ClaimKeeper(self.claims, self.heartbeat, self.queue, RENEW, frozenset())

    async def start(self) -> None:
        """As app.py: the heartbeat is taken (the cluster's first beat), then the keeper recovers."""
        assert await self.heartbeat.renew()
        await self.keeper.recover("restarted")


async def enqueue(queue: JobQueue, repository: MemoryRepository, item: Job) -> None:
    queue.admit(item.containers[0])
    await repository.add(item)
    queue.put(item)


async def test_no_job_starts_until_the_heartbeat_is_live_nor_once_it_is_stale() -> None:
    node = Node()
    queue, repository, gateway = node.queue, node.repository, node.gateway
    queue.start()
    await enqueue(queue, repository, job(1))
    await asyncio.sleep(0)
    assert gateway.calls == [] and queue.depth == 1  # no heartbeat yet
    await node.start()
    queue.kick()
    await asyncio.sleep(0.01)
    assert [call[1] for call in gateway.calls] == [{"n": 1}]
    # The store stops answering: once less than half a beat of heartbeat is left, nothing starts.
    node.leases.fail = True
    node.clock.now += LEASE - RENEW / 2
    await node.heartbeat.renew()
    await node.keeper.beat()
    await enqueue(queue, repository, job(2))
    await asyncio.sleep(0.01)
    assert len(gateway.calls) == 1 and queue.depth == 1
    node.leases.fail = False
    await node.heartbeat.renew()  # in time: it never ran out, nothing to check
    await node.keeper.beat()
    await asyncio.sleep(0.01)
    assert len(gateway.calls) == 2


async def test_a_lapsed_node_gives_up_the_jobs_others_took_meanwhile() -> None:
    node = Node(workers=1)
    queue, repository, gateway, claims = node.queue, node.repository, node.gateway, node.claims
    gateway.release.clear()  # the running job stays inside its call
    await node.start()
    queue.start()
    running, kept, lost, later = job(1), job(2), job(3), job(4)
    for item in (running, kept, lost):
        await enqueue(queue, repository, item)
    await asyncio.sleep(0.01)
    assert queue.known(running.key) is not None and queue.depth == 2
    # Paused past its heartbeat: another node failed the running job and took one queued job.
    node.clock.now += LEASE + 1
    claims.taken_by_others = {running.key, lost.key}
    repository.jobs[running.key].status = JobStatus.FAILED  # what the other node wrote
    await node.keeper.beat()  # the heartbeat has not been renewed: the keeper does nothing yet
    assert claims.claims == 1 and queue.known(lost.key) is not None
    assert await node.heartbeat.renew()  # the heartbeat loop takes it again
    # Between the renewal and the keeper's next beat nothing starts.
    assert not node.keeper.may_start()
    await node.keeper.beat()
    await enqueue(queue, repository, later)
    await asyncio.sleep(0.01)
    assert queue.known(running.key) is None  # the store answers for it now
    assert queue.known(lost.key) is None
    gateway.release.set()
    await asyncio.sleep(0.05)
    # The lost queued job never ran here; the kept one did, and the one that came later.
    assert [call[1] for call in gateway.calls] == [{"n": 1}, {"n": 2}, {"n": 4}]
    assert queue.pending == 0 and queue.depth == 0


async def test_a_renewal_that_lands_after_the_heartbeat_ran_out_counts_as_a_lapse() -> None:
    node = Node()
    await node.start()
    node.queue.start()
    await enqueue(node.queue, node.repository, job(1))
    await asyncio.sleep(0.01)
    node.gateway.release.clear()
    node.clock.now += LEASE - 1  # sent in time...

    class Slow(InMemoryLeaseStore):
        async def acquire(self, name: str, holder: str, ttl: float) -> bool:
            node.clock.now += 2  # ...answered after it ran out: another node may have claimed meanwhile
            return await super().acquire(name, holder, ttl)

    node.heartbeat._store = Slow(node.clock)
    assert await node.heartbeat.renew()
    assert not node.keeper.may_start()  # until the keeper checked what it still owns
    await node.keeper.beat()
    assert node.keeper.may_start()


async def test_claimed_jobs_join_the_queue() -> None:
    node = Node(workers=2)
    await node.start()
    node.queue.start()
    taken = [job(7), job(8)]
    for item in taken:
        await node.repository.add(item)
    node.claims.to_claim = Claimed(taken, failed=1, rerun=1)
    await node.keeper.beat()
    await asyncio.sleep(0.01)
    assert sorted(call[1]["n"] for call in node.gateway.calls) == [7, 8]
    assert node.claims.claims == 2


async def test_the_keeper_counts_what_it_took_over() -> None:
    node = Node(workers=2)
    keeper, claims = node.keeper, node.claims
    claims.to_claim = Claimed([job(1)], failed=2, rerun=0)
    await node.start()
    assert keeper.counts.as_json() == {"queued": 1, "rerun": 0, "failed": 2}
    claims.to_claim = Claimed([job(2), job(3), job(4)], failed=1, rerun=2)
    await keeper.beat()
    assert keeper.counts.as_json() == {"queued": 2, "rerun": 2, "failed": 3}
    await keeper.beat()  # nothing more to claim: the counts stay
    assert keeper.counts.as_json() == {"queued": 2, "rerun": 2, "failed": 3}
