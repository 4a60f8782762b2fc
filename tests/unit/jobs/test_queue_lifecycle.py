"""The job queue's shutdown and what it tells its observer (metrics)."""

from __future__ import annotations

import asyncio

import pytest

from node.jobs.desk import JobDesk, JobRequest
from node.jobs.errors import Overloaded
from node.jobs.guardian import Guardian
from node.jobs.model import JobStatus
from node.jobs.policy import ContainerPolicy
from node.jobs.queue import SHUTDOWN_REASON, JobQueue
from tests.support.polling import until
from tests.unit.fakes import MemoryRepository, ScriptedGateway


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []

    def admitted(self, container: str) -> None:
        self.events.append(("admitted", container))

    def rejected(self, container: str, bound: str) -> None:
        self.events.append(("rejected", container, bound))

    def finished(self, container: str, status: str) -> None:
        self.events.append(("finished", container, status))


def make(
    workers: int, queue_size: int = 10, per_container: int | None = None
) -> tuple[JobDesk, JobQueue, MemoryRepository, ScriptedGateway, Recorder]:
    repository, gateway, observer = MemoryRepository(), ScriptedGateway(), Recorder()
    queue = JobQueue(repository, gateway, workers, queue_size, per_container, observer=observer)
    guardian = Guardian([ContainerPolicy("a"), ContainerPolicy("b")])
    return JobDesk(repository, gateway, guardian, queue), queue, repository, gateway, observer


async def test_stop_starts_nothing_new_and_fails_only_what_overran_the_grace() -> None:
    desk, queue, repository, gateway, _ = make(workers=1)
    gateway.release.clear()  # every call hangs until released
    ids = [await desk.submit("ip", JobRequest(["a"], {"n": n})) for n in range(3)]
    queue.start()
    await asyncio.sleep(0.05)
    assert len(gateway.calls) == 1
    snapshot = queue.snapshot()
    assert (snapshot.depth, snapshot.pending, dict(snapshot.by_container)) == (2, 3, {"a": (2, 1)})

    queue.close(grace_seconds=0.1)
    gateway.release.set()  # too late for queued jobs: closing starts none
    await queue.stop(grace_seconds=99)  # the grace already started at close()
    statuses = [repository.jobs[("ip", job_id)].status for job_id in ids]
    assert statuses[0] is JobStatus.SUCCESS  # released within the grace
    assert statuses[1:] == [JobStatus.QUEUED, JobStatus.QUEUED]  # left for the next start
    assert len(gateway.calls) == 1
    assert queue.snapshot().by_container == {"a": (2, 0)}  # and still counted as queued


async def test_a_job_overrunning_the_grace_fails_with_the_shutdown_reason() -> None:
    desk, queue, repository, gateway, observer = make(workers=2)
    gateway.release.clear()
    job_id = await desk.submit("ip", JobRequest(["a"], {}))
    queue.start()
    await asyncio.sleep(0.05)
    await asyncio.wait_for(queue.stop(grace_seconds=0.1), timeout=5)
    job = repository.jobs[("ip", job_id)]
    assert job.status is JobStatus.FAILED and job.result is not None and job.result.error == SHUTDOWN_REASON
    assert ("finished", "a", "failed") in observer.events


async def test_observer_sees_admissions_rejections_and_outcomes() -> None:
    desk, queue, _, gateway, observer = make(workers=2, queue_size=3, per_container=2)
    gateway.behaviours["b"] = lambda data: ValueError("no")
    await desk.submit("ip", JobRequest(["a"], {}))
    await desk.submit("ip", JobRequest(["a"], {}))
    with pytest.raises(Overloaded):
        await desk.submit("ip", JobRequest(["a"], {}))  # the container's bound
    await desk.submit("ip", JobRequest(["b"], {}))
    with pytest.raises(Overloaded):
        await desk.submit("ip", JobRequest(["b"], {}))  # the global bound
    queue.start()
    await until(lambda: queue.pending == 0, seconds=1.0, interval=0.01, what="the jobs finishing")
    await queue.stop(0)
    assert observer.events.count(("admitted", "a")) == 2 and observer.events.count(("admitted", "b")) == 1
    assert ("rejected", "a", "container") in observer.events and ("rejected", "b", "queue") in observer.events
    assert observer.events.count(("finished", "a", "success")) == 2
    assert ("finished", "b", "failed") in observer.events
    assert queue.snapshot().by_container == {}


async def test_a_broken_observer_never_breaks_a_job() -> None:
    class Broken(Recorder):
        def finished(self, container: str, status: str) -> None:
            raise RuntimeError("metrics down")

    repository, gateway = MemoryRepository(), ScriptedGateway()
    queue = JobQueue(repository, gateway, 1, 10, observer=Broken())
    desk = JobDesk(repository, gateway, Guardian([ContainerPolicy("a")]), queue)
    job_id = await desk.submit("ip", JobRequest(["a"], {"x": 1}))
    queue.start()
    await until(lambda: queue.pending == 0, seconds=1.0, interval=0.01, what="the jobs finishing")
    await queue.stop(0)
    assert repository.jobs[("ip", job_id)].status is JobStatus.SUCCESS
