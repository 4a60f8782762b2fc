"""A store that cannot write now, or can never hold a value: no job stays running.

The faults are injected at the adapter boundary (the repository), as the store
raises them (node/store/faults.py); the disk-full test in
tests/integration/store/test_disk_full.py produces the real thing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from node.jobs.desk import JobDesk, JobRequest
from node.jobs.errors import StoreUnavailable, UnstorableValue
from node.jobs.guardian import Guardian
from node.jobs.model import ContainerResult, JobStatus, TokenUsage
from node.jobs.policy import ContainerPolicy
from node.jobs.queue import JobQueue
from tests.support.polling import until
from tests.support.rendered import rendered
from tests.unit.fakes import MemoryRepository, ScriptedGateway


class FaultyRepository(MemoryRepository):
    """finish() raises the queued faults first, one per call."""

    def __init__(self) -> None:
        super().__init__()
        self.finish_faults: list[Exception] = []
        self.finish_calls = 0

    async def finish(
        self,
        key: tuple[str, str],
        status: JobStatus,
        result: ContainerResult | None,
        intermediate: Sequence[ContainerResult],
        usage: TokenUsage | None = None,
        caller: str | None = None,
    ) -> None:
        self.finish_calls += 1
        if self.finish_faults:
            raise self.finish_faults.pop(0)
        await super().finish(key, status, result, intermediate, usage, caller)


def make(repository: FaultyRepository, workers: int = 2) -> tuple[JobDesk, JobQueue]:
    queue = JobQueue(repository, ScriptedGateway(), workers, 10)
    desk = JobDesk(repository, queue._gateway, Guardian([ContainerPolicy("a")]), queue)
    queue.start()
    return desk, queue


async def poll(desk: JobDesk, job_id: str) -> dict[str, Any]:
    [job] = await rendered(desk, "ip", [job_id], intermediate=False)
    return job


async def finished(desk: JobDesk, job_id: str) -> bool:
    return (await poll(desk, job_id))["status"] != "running"


async def test_a_store_that_cannot_write_is_retried_and_the_job_shows_running_meanwhile() -> None:
    repository = FaultyRepository()
    repository.finish_faults = [StoreUnavailable("database or disk is full")] * 4
    desk, queue = make(repository)
    job_id = await desk.submit("ip", JobRequest(["a"], {"n": 1}))
    await asyncio.sleep(0.1)  # the first retries (0.05 s, 0.1 s) are under way
    assert 1 <= repository.finish_calls <= 4
    assert (await poll(desk, job_id))["status"] == "running"  # not finished, not lost
    await until(lambda: finished(desk, job_id), seconds=5, interval=0.05, what="the job ending")
    job = await poll(desk, job_id)
    assert job["status"] == "success" and job["result"]["output"] == {"n": 1}
    assert repository.finish_calls == 5
    await asyncio.sleep(0.01)  # the worker's task ends just after the result is remembered
    assert queue.pending == 0


async def test_a_result_the_store_can_never_hold_fails_the_job_with_the_reason() -> None:
    repository = FaultyRepository()
    repository.finish_faults = [UnstorableValue("The value holds a lone UTF-16 surrogate, which is not valid text")]
    desk, _ = make(repository)
    job_id = await desk.submit("ip", JobRequest(["a"], {"n": 1}))
    await until(lambda: finished(desk, job_id), seconds=1, interval=0.01, what="the job ending")
    job = await poll(desk, job_id)
    assert job["status"] == "failed"
    assert job["result"] == {
        "container": "a",
        "error": "the container's output cannot be stored: "
        "The value holds a lone UTF-16 surrogate, which is not valid text",
    }
    assert repository.jobs[("ip", job_id)].status is JobStatus.FAILED  # stored, not only in memory


async def test_an_unexpected_store_error_still_ends_the_job() -> None:
    repository = FaultyRepository()
    repository.finish_faults = [RuntimeError("a bug")]
    desk, _ = make(repository)
    job_id = await desk.submit("ip", JobRequest(["a"], {}))
    await until(lambda: finished(desk, job_id), seconds=1, interval=0.01, what="the job ending")
    job = await poll(desk, job_id)
    assert job["status"] == "failed"
    assert job["result"]["error"] == "internal error while storing the result: RuntimeError"


async def test_shutdown_does_not_wait_forever_for_a_store_that_cannot_write() -> None:
    repository = FaultyRepository()
    repository.finish_faults = [StoreUnavailable("disk I/O error")] * 10_000
    desk, queue = make(repository)
    job_id = await desk.submit("ip", JobRequest(["a"], {}))
    await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(queue.stop(grace_seconds=0.3), 5)
    assert loop.time() - started < 2
    # Still running in the store: the next start records it as failed (recover()).
    assert repository.jobs[("ip", job_id)].status is JobStatus.RUNNING
