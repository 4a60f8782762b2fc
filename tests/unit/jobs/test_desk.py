import asyncio

import pytest

from node.jobs.desk import DelegatedRequest, JobDesk, JobRequest
from node.jobs.errors import Overloaded, Rejected
from node.jobs.guardian import Guardian
from node.jobs.model import JobStatus
from node.jobs.policy import ContainerPolicy
from node.jobs.queue import JobQueue
from tests.support.polling import until
from tests.support.rendered import rendered, rendered_batch
from tests.unit.fakes import MemoryRepository, ScriptedGateway

CONTAINERS = [ContainerPolicy("echo"), ContainerPolicy("other")]


def make(
    queue_size: int = 100, per_container: int | None = None, workers: int = 2, gateway: ScriptedGateway | None = None
) -> tuple[JobDesk, JobQueue, MemoryRepository, ScriptedGateway]:
    repository = MemoryRepository()
    gateway = gateway or ScriptedGateway()
    queue = JobQueue(repository, gateway, workers, queue_size, per_container)
    desk = JobDesk(repository, gateway, Guardian(CONTAINERS), queue)
    return desk, queue, repository, gateway


async def drain(queue: JobQueue) -> None:
    await until(lambda: queue.pending == 0, seconds=2.0, interval=0.01, what="the jobs finishing")


async def test_job_is_stored_before_its_id_is_returned_and_then_runs() -> None:
    desk, queue, repository, _ = make()
    job_id = await desk.submit("1.1.1.1", JobRequest(["echo"], {"a": 1}))
    assert ("1.1.1.1", job_id) in repository.jobs
    [result] = await rendered(desk, "1.1.1.1", [job_id], False)
    assert result["status"] == "running"  # queued reads as running on the wire
    queue.start()
    await drain(queue)
    [result] = await rendered(desk, "1.1.1.1", [job_id], False)
    assert result == {"id": job_id, "status": "success", "result": {"container": "echo", "output": {"a": 1}}}
    await queue.stop(0)


async def test_results_are_scoped_by_ip_in_request_order_and_unknown_dropped() -> None:
    desk, _, _, _ = make()
    first = await desk.submit("1.1.1.1", JobRequest(["echo"], 1))
    second = await desk.submit("1.1.1.1", JobRequest(["echo"], 2))
    got = await rendered(desk, "1.1.1.1", [second, "nope", first, second], False)
    assert [item["id"] for item in got] == [second, first]
    assert await rendered(desk, "2.2.2.2", [first], False) == []
    assert await rendered(desk, "1.1.1.1", [""], False) == []


async def test_batch_answers_in_order_with_one_store_write() -> None:
    desk, _, repository, _ = make()
    answers = await rendered_batch(
        desk,
        "1.1.1.1",
        [JobRequest(["echo"], 1), JobRequest(["bad"], 2), JobRequest([], 3), JobRequest(["other"], 4)],
    )
    assert "id" in answers[0] and "id" in answers[3]
    assert answers[1] == {"error": "Container not supported", "params": {"container": "bad"}}
    assert answers[2] == {"error": "No containers specified", "params": {}}
    assert repository.writes == 1


async def test_delegated_without_chain_is_rejected_cleanly() -> None:
    desk, _, _, _ = make()
    with pytest.raises(Rejected) as caught:
        await desk.submit_delegated(DelegatedRequest({}, {}, {}))
    assert caught.value.message == "Chain not enabled"
    answers = await rendered_batch(desk, "1.1.1.1", [DelegatedRequest({}, {}, {})])
    assert answers == [{"error": "Chain not enabled", "params": {}}]


async def test_queue_bounds_global_and_per_container() -> None:
    desk, queue, _, _ = make(queue_size=3, per_container=2)
    await desk.submit("ip", JobRequest(["echo"], 1))
    await desk.submit("ip", JobRequest(["echo"], 2))
    with pytest.raises(Overloaded) as per_container:
        await desk.submit("ip", JobRequest(["echo"], 3))
    assert per_container.value.params == {"container": "echo", "limit": 2}
    await desk.submit("ip", JobRequest(["other"], 4))
    with pytest.raises(Overloaded):
        await desk.submit("ip", JobRequest(["other"], 5))
    answers = await rendered_batch(desk, "ip", [JobRequest(["other"], 6)])
    assert answers[0]["error"].startswith("Too many jobs queued")
    queue.start()
    await drain(queue)
    await desk.submit("ip", JobRequest(["echo"], 7))  # room again once they ran
    await queue.stop(0)


async def test_shutdown_waits_for_running_jobs_then_fails_the_late_ones() -> None:
    gateway = ScriptedGateway()
    gateway.release.clear()  # every container call blocks until released
    desk, queue, repository, _ = make(workers=1, gateway=gateway)
    quick = await desk.submit("ip", JobRequest(["echo"], 1))
    queued = await desk.submit("ip", JobRequest(["echo"], 2))
    queue.start()
    await asyncio.sleep(0.05)
    await queue.stop(grace_seconds=0.1)
    assert repository.jobs[("ip", quick)].status is JobStatus.FAILED
    result = repository.jobs[("ip", quick)].result
    assert result is not None and result.error is not None and "shut down" in result.error
    # The job that never started stays queued in the store, to run after a restart.
    assert repository.jobs[("ip", queued)].status is JobStatus.QUEUED


async def test_record_status_stores_without_result() -> None:
    desk, _, _, _ = make()
    await desk.record_status("ip", "ext-1", JobStatus.SUCCESS, ["echo"], None)
    assert await rendered(desk, "ip", ["ext-1"], True) == [
        {"id": "ext-1", "status": "success", "result": None, "intermediate_results": [], "intermediate": []}
    ]
    assert await desk.ids("ip", pending=False) == ["ext-1"]


async def test_jobs_a_store_kept_bound_refuses_give_their_places_back() -> None:
    # Several nodes on one store: the store stores only what fits its bound (server_jobs.py).
    desk, queue, repository, _ = make(workers=1)
    queue.start()
    repository.room = 2
    answers = await rendered_batch(desk, "ip", [JobRequest(["echo"], n) for n in range(4)])
    full = "Too many jobs queued, retry later"
    assert [answer.get("error") for answer in answers] == [None, None, full, full]
    assert all("id" in answer for answer in answers[:2])
    await drain(queue)
    with pytest.raises(Overloaded):  # a lone job, reserved a free worker: the worker is free again
        await desk.submit("ip", JobRequest(["echo"], 5))
    assert queue.pending == 0 and queue.reserve()
    queue.unreserve()
    repository.room = 1
    job_id = await desk.submit("ip", JobRequest(["echo"], 6))
    await drain(queue)
    assert repository.jobs[("ip", job_id)].status is JobStatus.SUCCESS
    await queue.stop(0)
