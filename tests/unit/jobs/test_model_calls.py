"""A model call (/v1) as a job: admitted, stored as running before the container is asked,
finished once with its usage, its place given back however it ends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from node.jobs.errors import Overloaded, Rejected
from node.jobs.model import ContainerResult, JobOrigin, JobStatus, TokenUsage
from node.jobs.model_calls import CLIENT_LEFT, NODE_STOPPED
from tests.support.rendered import rendered
from tests.unit.jobs.test_desk import make

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


async def test_stored_as_running_before_the_call_then_finished_with_usage() -> None:
    desk, queue, repository, gateway = make()
    call = await desk.open_model_call("1.1.1.1", "m", "echo", CHAT)
    stored = repository.jobs[("1.1.1.1", call.id)]
    assert stored.status is JobStatus.RUNNING and stored.origin is JobOrigin.MODEL and stored.model == "m"
    assert gateway.calls == [] and queue.pending == 1
    async with call:
        result = await call.complete()
        await call.finish(result, TokenUsage(3, 4))
    assert gateway.calls[0][1] == CHAT
    assert stored.status is JobStatus.SUCCESS and stored.usage == TokenUsage(3, 4)
    assert queue.pending == 0
    [wire] = await rendered(desk, "1.1.1.1", [call.id], False)
    assert wire["model"] == "m" and wire["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


async def test_leaving_unfinished_fails_the_job_and_frees_its_place() -> None:
    desk, queue, repository, _ = make()
    call = await desk.open_model_call("1.1.1.1", "m", "echo", CHAT)
    with pytest.raises(asyncio.CancelledError):
        async with call:
            raise asyncio.CancelledError
    stored = repository.jobs[("1.1.1.1", call.id)]
    assert stored.status is JobStatus.FAILED and stored.result == ContainerResult("echo", error=CLIENT_LEFT)
    assert queue.pending == 0


async def test_a_call_cut_after_the_shutdown_grace_says_the_node_stopped_it() -> None:
    desk, queue, repository, _ = make()
    call = await desk.open_model_call("1.1.1.1", "m", "echo", CHAT)
    queue.close(grace_seconds=0.0)  # the node is stopping and the grace has run out
    with pytest.raises(asyncio.CancelledError):
        async with call:
            raise asyncio.CancelledError
    stored = repository.jobs[("1.1.1.1", call.id)]
    assert stored.status is JobStatus.FAILED and stored.result == ContainerResult("echo", error=NODE_STOPPED)


async def test_finish_counts_once() -> None:
    desk, queue, _, _ = make()
    call = await desk.open_model_call("1.1.1.1", "m", "echo", CHAT)
    async with call:
        await call.fail("first")
        await call.fail("second")
    assert call.job.result == ContainerResult("echo", error="first") and queue.pending == 0


async def test_bounds_guardian_and_a_failed_store_write_leave_no_place_taken() -> None:
    desk, queue, repository, _ = make(queue_size=1)
    held = await desk.open_model_call("1.1.1.1", "m", "echo", CHAT)
    with pytest.raises(Overloaded):
        await desk.open_model_call("1.1.1.1", "m", "echo", CHAT)
    await held.fail("done")
    with pytest.raises(Rejected):
        await desk.open_model_call("1.1.1.1", "m", "unknown", CHAT)
    repository.fail_writes = OSError("disk full")
    with pytest.raises(OSError):
        await desk.open_model_call("1.1.1.1", "m", "echo", CHAT)
    assert queue.pending == 0


def hold_outcome_writes(monkeypatch: pytest.MonkeyPatch, repository: Any) -> asyncio.Event:
    """Make the repository's outcome writes wait until the returned event is set."""
    stored = asyncio.Event()
    write = repository.finish

    async def slow_finish(*args: Any) -> None:
        await stored.wait()
        await write(*args)

    monkeypatch.setattr(repository, "finish", slow_finish)
    return stored


async def test_a_read_of_the_job_waits_for_an_outcome_still_being_stored(monkeypatch: pytest.MonkeyPatch) -> None:
    desk, queue, repository, _ = make()
    call = await desk.open_model_call("1.1.1.1", "m", "echo", CHAT)
    stored = hold_outcome_writes(monkeypatch, repository)
    async with call:
        storing = call.finish_soon(await call.complete(), TokenUsage(3, 4))
        assert call.finished and queue.outcome_pending(call.job.key) is storing
        reading = asyncio.ensure_future(rendered(desk, "1.1.1.1", [call.id], False))
        try:
            await asyncio.sleep(0.05)
            assert not reading.done() and not storing.done()  # the read waits for the write
        finally:
            stored.set()
    [wire] = await reading
    assert wire["status"] == "success" and wire["usage"]["total_tokens"] == 7
    assert queue.outcome_pending(call.job.key) is None and queue.pending == 0


async def test_leaving_waits_for_the_outcome_and_stores_it_once() -> None:
    desk, queue, repository, _ = make()
    call = await desk.open_model_call("1.1.1.1", "m", "echo", CHAT)
    with pytest.raises(ConnectionResetError):
        async with call:
            storing = call.finish_soon(await call.complete(), TokenUsage(1, 1))
            raise ConnectionResetError  # the answer could not be sent: the outcome stays the model's
    assert storing.done() and queue.pending == 0
    assert repository.jobs[("1.1.1.1", call.id)].status is JobStatus.SUCCESS


async def test_the_place_is_given_back_when_the_answer_is_known_not_when_it_is_stored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    desk, queue, repository, _ = make(queue_size=1)
    call = await desk.open_model_call("1.1.1.1", "m", "echo", CHAT)
    stored = hold_outcome_writes(monkeypatch, repository)
    async with call:
        storing = call.finish_soon(await call.complete(), TokenUsage(1, 1))
        try:
            assert queue.pending == 0  # the caller's next call fits while this outcome is written
            following = await desk.open_model_call("1.1.1.1", "m", "echo", CHAT)
            assert not storing.done()
        finally:
            stored.set()
    await following.fail("done")
    assert queue.pending == 0 and repository.jobs[("1.1.1.1", call.id)].status is JobStatus.SUCCESS
