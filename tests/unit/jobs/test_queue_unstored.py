"""Jobs run for the chain: in the same bounds, workers and pending count as REST jobs, never stored."""

from __future__ import annotations

import asyncio

import pytest

from node.jobs.desk import JobDesk, JobRequest
from node.jobs.errors import Overloaded
from node.jobs.guardian import Guardian
from node.jobs.model import JobStatus, Location
from node.jobs.policy import ContainerPolicy
from node.jobs.queue import JobQueue
from tests.unit.fakes import MemoryRepository, ScriptedGateway


def make(
    workers: int, queue_size: int = 10, per_container: int | None = None
) -> tuple[JobDesk, JobQueue, MemoryRepository, ScriptedGateway]:
    repository, gateway = MemoryRepository(), ScriptedGateway()
    queue = JobQueue(repository, gateway, workers, queue_size, per_container)
    guardian = Guardian([ContainerPolicy("a"), ContainerPolicy("b")])
    return JobDesk(repository, gateway, guardian, queue), queue, repository, gateway


def chain_job(desk: JobDesk, container: str = "a", data: object = "0xab") -> asyncio.Future:
    return asyncio.ensure_future(desk.run_for_chain([container], data, False, Location.ONCHAIN, Location.ONCHAIN))


async def test_a_chain_job_runs_on_a_worker_and_is_never_stored() -> None:
    desk, queue, repository, gateway = make(workers=2)
    queue.start()
    outcome = await desk.run_for_chain(["a", "b"], "0xab", True, Location.OFFCHAIN, Location.ONCHAIN)
    assert outcome.status is JobStatus.SUCCESS and outcome.result.output == "0xab"
    # Each end of the chain faces the job's real source and destination.
    assert gateway.calls == [("a", "0xab", Location.OFFCHAIN, Location.OFFCHAIN, True),
                             ("b", "0xab", Location.OFFCHAIN, Location.ONCHAIN, True)]  # fmt: skip
    assert repository.jobs == {} and repository.writes == 0
    await asyncio.sleep(0)
    assert (queue.pending, queue.pending_unstored) == (0, 0)


async def test_chain_jobs_count_as_pending_and_fill_the_same_bounds() -> None:
    desk, queue, _, gateway = make(workers=1, queue_size=3, per_container=2)
    gateway.release.clear()  # every call hangs until released
    queue.start()
    running = chain_job(desk)
    waiting = chain_job(desk)
    await asyncio.sleep(0.01)
    assert len(gateway.calls) == 1  # one worker: the second waits its turn
    snapshot = queue.snapshot()
    assert (snapshot.depth, snapshot.pending, dict(snapshot.by_container)) == (1, 2, {"a": (1, 1)})
    assert (queue.pending_unstored, desk.pending_offchain) == (2, 0)

    # The per-container bound is full for REST jobs and chain jobs alike...
    assert not desk.has_room("a")
    with pytest.raises(Overloaded, match="for this container"):
        await desk.submit("ip", JobRequest(["a"], {}))
    with pytest.raises(Overloaded, match="for this container"):
        await desk.run_for_chain(["a"], "0x", False, Location.ONCHAIN, Location.ONCHAIN)
    # ... and the global one counts them too.
    await desk.submit("ip", JobRequest(["b"], {}))
    assert desk.pending_offchain == 1 and not desk.has_room("b")
    with pytest.raises(Overloaded, match="Too many jobs queued"):
        await desk.submit("ip", JobRequest(["b"], {}))

    gateway.release.set()
    assert [(await job).status for job in (running, waiting)] == [JobStatus.SUCCESS] * 2
    await asyncio.sleep(0.01)
    assert (queue.pending, queue.pending_unstored, desk.has_room("a")) == (0, 0, True)


async def test_a_cancelled_caller_gives_its_place_back_waiting_or_running() -> None:
    desk, queue, _, gateway = make(workers=1, queue_size=2)
    gateway.release.clear()
    queue.start()
    running, waiting = chain_job(desk), chain_job(desk)
    await asyncio.sleep(0.01)
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert (queue.pending, queue.depth, dict(queue.snapshot().by_container)) == (1, 0, {"a": (0, 1)})
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    await asyncio.sleep(0.01)
    assert (queue.pending, queue.pending_unstored, queue.snapshot().by_container) == (0, 0, {})
    # The worker is free again: a REST job runs.
    gateway.release.set()
    job_id = await desk.submit("ip", JobRequest(["a"], {"n": 1}))
    await asyncio.sleep(0.01)
    assert (await desk.results("ip", [job_id]))[0].status is JobStatus.SUCCESS


async def test_a_closing_queue_refuses_chain_jobs_so_the_chain_retries_later() -> None:
    desk, queue, _, _ = make(workers=1)
    queue.start()
    queue.close(grace_seconds=1)
    with pytest.raises(Overloaded, match="shutting down"):
        await desk.run_for_chain(["a"], "0x", False, Location.ONCHAIN, Location.ONCHAIN)
    assert queue.pending == 0
