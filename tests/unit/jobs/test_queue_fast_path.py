"""The job path's shortcuts: a free worker is reserved in the accepting write, and the
queue answers for the jobs it runs and has just finished without reading the store."""

from __future__ import annotations

import pytest

from node.api import wire
from node.jobs.desk import JobDesk, JobRequest
from node.jobs.guardian import Guardian
from node.jobs.model import JobStatus
from node.jobs.policy import ContainerPolicy
from node.jobs.queue import RECENT_JOBS, RECENT_RESULT_BYTES, JobQueue, fits
from tests.support.polling import until
from tests.support.rendered import rendered, rendered_batch
from tests.unit.fakes import MemoryRepository, ScriptedGateway

IP = "10.0.0.1"


def make(
    workers: int = 2, gateway: ScriptedGateway | None = None
) -> tuple[JobDesk, JobQueue, MemoryRepository, ScriptedGateway]:
    repository, gateway = MemoryRepository(), gateway or ScriptedGateway()
    queue = JobQueue(repository, gateway, workers, 10_000)
    guardian = Guardian([ContainerPolicy("echo")])
    return JobDesk(repository, gateway, guardian, queue), queue, repository, gateway


async def test_a_job_with_a_free_worker_is_stored_as_running_and_never_marked_again() -> None:
    desk, queue, repository, gateway = make(workers=1)
    gateway.release.clear()
    queue.start()
    first = await desk.submit(IP, JobRequest(["echo"], 1))
    # Stored as running by the write that accepted it: a crash now reads "was running".
    assert repository.jobs[(IP, first)].status is JobStatus.RUNNING
    second = await desk.submit(IP, JobRequest(["echo"], 2))  # the only worker is taken
    assert repository.jobs[(IP, second)].status is JobStatus.QUEUED
    gateway.release.set()
    await until(lambda: queue.pending == 0)
    assert repository.marked_running == [(IP, second)]  # only the job that waited
    assert [repository.jobs[(IP, job)].status for job in (first, second)] == [JobStatus.SUCCESS] * 2
    await queue.stop(0)


async def test_jobs_submitted_before_start_wait_and_run_in_order() -> None:
    desk, queue, repository, gateway = make(workers=1)
    ids = [await desk.submit(IP, JobRequest(["echo"], n)) for n in range(3)]
    assert all(repository.jobs[(IP, job)].status is JobStatus.QUEUED for job in ids)
    queue.start()
    await until(lambda: queue.pending == 0)
    assert [call[1] for call in gateway.calls] == [0, 1, 2]
    await queue.stop(0)


async def test_a_failed_accepting_write_gives_the_reserved_worker_back() -> None:
    desk, queue, repository, gateway = make(workers=1)
    queue.start()
    repository.fail_writes = OSError("disk full")
    with pytest.raises(OSError):
        await desk.submit(IP, JobRequest(["echo"], 1))
    with pytest.raises(OSError):
        await desk.submit_batch(IP, [JobRequest(["echo"], 2), JobRequest(["echo"], 3)])
    assert queue.pending == 0
    repository.fail_writes = None
    gateway.release.clear()
    job_id = await desk.submit(IP, JobRequest(["echo"], 4))
    assert repository.jobs[(IP, job_id)].status is JobStatus.RUNNING  # the worker is free again
    gateway.release.set()
    await until(lambda: queue.pending == 0)
    assert repository.jobs[(IP, job_id)].status is JobStatus.SUCCESS
    await queue.stop(0)


async def test_a_batch_reserves_as_many_workers_as_are_free() -> None:
    desk, queue, repository, gateway = make(workers=2)
    gateway.release.clear()
    queue.start()
    answers = await rendered_batch(desk, IP, [JobRequest(["echo"], n) for n in range(3)])
    statuses = [repository.jobs[(IP, answer["id"])].status for answer in answers]
    assert statuses == [JobStatus.RUNNING, JobStatus.RUNNING, JobStatus.QUEUED]
    gateway.release.set()
    await until(lambda: queue.pending == 0)
    assert repository.marked_running == [(IP, answers[2]["id"])]
    await queue.stop(0)


async def test_polling_a_running_job_and_its_result_needs_no_store_read() -> None:
    desk, queue, repository, gateway = make()
    gateway.release.clear()
    queue.start()
    job_id = await desk.submit(IP, JobRequest(["echo"], {"a": 1}))
    assert await rendered(desk, IP, [job_id], False) == [{"id": job_id, "status": "running", "result": None}]
    assert await rendered(desk, "10.9.9.9", [job_id], False) == []  # another client: not its job
    gateway.release.set()
    await until(lambda: queue.pending == 0)
    reads = repository.reads
    [answer] = await rendered(desk, IP, [job_id], True)
    assert answer["status"] == "success" and answer["result"] == {"container": "echo", "output": {"a": 1}}
    assert answer["intermediate"] == []
    assert repository.reads == reads  # answered from memory
    # What memory answers is what the store holds.
    [stored] = await repository.get_many(IP, [job_id])
    assert wire.job_result(stored, True) == answer
    await queue.stop(0)


async def test_large_results_and_old_jobs_are_read_from_the_store() -> None:
    big = "x" * (RECENT_RESULT_BYTES + 1)
    desk, queue, repository, _ = make()
    queue.start()
    big_id = await desk.submit(IP, JobRequest(["echo"], big))
    small_ids = [await desk.submit(IP, JobRequest(["echo"], n)) for n in range(RECENT_JOBS + 1)]
    await until(lambda: queue.pending == 0)
    reads = repository.reads
    assert (await rendered(desk, IP, [big_id], False))[0]["result"]["output"] == big
    assert repository.reads == reads + 1
    assert (await rendered(desk, IP, [small_ids[0]], False))[0]["status"] == "success"  # the oldest: evicted
    assert repository.reads == reads + 2
    await rendered(desk, IP, [small_ids[-1]], False)
    assert repository.reads == reads + 2
    await queue.stop(0)


async def test_recording_a_status_or_pruning_drops_what_memory_remembers() -> None:
    desk, queue, repository, _ = make()
    queue.start()
    first = await desk.submit(IP, JobRequest(["echo"], 1))
    second = await desk.submit(IP, JobRequest(["echo"], 2))
    await until(lambda: queue.pending == 0)
    await desk.record_status(IP, first, JobStatus.FAILED, ["echo"], None)
    assert (await rendered(desk, IP, [first], False))[0] == {"id": first, "status": "failed", "result": None}
    del repository.jobs[(IP, second)]  # as a prune would
    repository.pruned = 1
    assert await desk.prune(0.0) == 1
    assert await rendered(desk, IP, [second], False) == []
    await queue.stop(0)


def test_fits_measures_json_roughly_and_stops_early() -> None:
    assert fits({"a": [1, 2, "three"]}, 64)
    assert not fits({"a": "x" * 100}, 64)
    assert not fits(list(range(10_000_000)), 1024)  # refused at once, not walked
    assert not fits([[["y" * 50]] * 50], 1024)
