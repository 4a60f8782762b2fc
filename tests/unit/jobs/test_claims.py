"""The claim keeper on an in-memory claims store: the gate on starting jobs, and what a node
whose lease ran out gives up (node/jobs/claims.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from node.jobs.claims import ClaimKeeper
from node.jobs.model import Job, JobStatus
from node.jobs.ports import Claimed
from node.jobs.queue import JobQueue
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
        self.owner: str | None = "node-a"
        self.renew_fails = False
        self.taken_by_others: set[tuple[str, str]] = set()
        self.to_claim = Claimed()
        self.renewals = 0

    async def renew(self) -> None:
        if self.renew_fails:
            raise ConnectionError("store unreachable")
        self.renewals += 1

    async def owned(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        return set(keys) - self.taken_by_others

    async def release_queued(self) -> int:
        return 0

    async def claim(
        self, room: int, retryable: frozenset[str], restart_reason: str | None = None, batch: int = 500
    ) -> Claimed:
        claimed, self.to_claim = self.to_claim, Claimed()
        return claimed


def job(n: int) -> Job:
    return Job(f"job-{n}", "1.1.1.1", ["a"], {"n": n})


def setup(workers: int = 1) -> tuple[JobQueue, ClaimKeeper, MemoryClaims, MemoryRepository, ScriptedGateway, Clock]:
    repository, gateway, claims, clock = MemoryRepository(), ScriptedGateway(), MemoryClaims(), Clock()
    queue = JobQueue(repository, gateway, workers, max_pending=10)
    keeper = ClaimKeeper(claims, queue, LEASE, RENEW, frozenset(), monotonic=clock)
    return queue, keeper, claims, repository, gateway, clock


async def enqueue(queue: JobQueue, repository: MemoryRepository, item: Job) -> None:
    queue.admit(item.containers[0])
    await repository.add(item)
    queue.put(item)


async def test_no_job_starts_until_the_lease_is_renewed_nor_once_it_is_stale() -> None:
    queue, keeper, claims, repository, gateway, clock = setup()
    queue.start()
    await enqueue(queue, repository, job(1))
    await asyncio.sleep(0)
    assert gateway.calls == [] and queue.depth == 1  # no lease yet
    await keeper.recover("restarted")
    queue.kick()
    await asyncio.sleep(0.01)
    assert [call[1] for call in gateway.calls] == [{"n": 1}]
    # The store stops answering: once less than half a beat of lease is left, nothing starts.
    claims.renew_fails = True
    clock.now += LEASE - RENEW / 2
    await keeper.beat()
    await enqueue(queue, repository, job(2))
    await asyncio.sleep(0.01)
    assert len(gateway.calls) == 1 and queue.depth == 1
    claims.renew_fails = False
    await keeper.beat()
    await asyncio.sleep(0.01)
    assert len(gateway.calls) == 2


async def test_a_lapsed_node_gives_up_the_jobs_others_took_meanwhile() -> None:
    queue, keeper, claims, repository, gateway, clock = setup(workers=1)
    gateway.release.clear()  # the running job stays inside its call
    await keeper.recover("restarted")
    queue.start()
    running, kept, lost = job(1), job(2), job(3)
    for item in (running, kept, lost):
        await enqueue(queue, repository, item)
    await asyncio.sleep(0.01)
    assert queue.known(running.key) is not None and queue.depth == 2
    # Paused past its lease: another node failed the running job and took one queued job.
    clock.now += LEASE + 1
    claims.taken_by_others = {running.key, lost.key}
    repository.jobs[running.key].status = JobStatus.FAILED  # what the other node wrote
    await keeper.beat()
    await asyncio.sleep(0.01)
    assert queue.known(running.key) is None  # the store answers for it now
    assert queue.known(lost.key) is None
    gateway.release.set()
    await asyncio.sleep(0.05)
    # The lost queued job never ran here; the kept one did; the running one was stopped.
    assert [call[1] for call in gateway.calls] == [{"n": 1}, {"n": 2}]
    assert queue.pending == 0 and queue.depth == 0
    assert queue.known(running.key) is None


async def test_claimed_jobs_join_the_queue() -> None:
    queue, keeper, claims, repository, gateway, _ = setup(workers=2)
    await keeper.recover("restarted")
    queue.start()
    taken = [job(7), job(8)]
    for item in taken:
        await repository.add(item)
    claims.to_claim = Claimed(taken, failed=1, rerun=1)
    await keeper.beat()
    await asyncio.sleep(0.01)
    assert sorted(call[1]["n"] for call in gateway.calls) == [7, 8]
    assert claims.renewals == 2


async def test_the_keeper_counts_what_it_took_over() -> None:
    _, keeper, claims, _, _, _ = setup(workers=2)
    claims.to_claim = Claimed([job(1)], failed=2, rerun=0)
    await keeper.recover("restarted")
    assert keeper.counts.as_json() == {"queued": 1, "rerun": 0, "failed": 2}
    claims.to_claim = Claimed([job(2), job(3), job(4)], failed=1, rerun=2)
    await keeper.beat()
    assert keeper.counts.as_json() == {"queued": 2, "rerun": 2, "failed": 3}
    await keeper.beat()  # nothing more to claim: the counts stay
    assert keeper.counts.as_json() == {"queued": 2, "rerun": 2, "failed": 3}
