"""The SQL repository on a real SQLite file and a real PostgreSQL server (conftest.store_url)."""

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from node.api import wire
from node.jobs.errors import UnstorableValue
from node.jobs.model import ContainerResult, Job, JobOrigin, JobStatus, TokenUsage, new_job_id
from node.store.engine import create_engine, migrate
from node.store.jobs_sql import JobStore
from node.store.repositories import job_repository
from node.store.server_jobs import ServerJobRepository
from node.store.sqlite_jobs import SqliteJobRepository


@pytest.fixture
async def repository(store_url: str) -> AsyncIterator[JobStore]:
    engine = create_engine(store_url)
    await migrate(engine)
    await migrate(engine)  # idempotent
    repository = job_repository(engine, "node-test")
    yield repository
    await repository.close()
    await engine.dispose()


def job(
    ip: str = "1.1.1.1", status: JobStatus = JobStatus.QUEUED, origin: JobOrigin = JobOrigin.OFFCHAIN, **kw: Any
) -> Job:
    now = time.time()
    return Job(
        new_job_id(),
        ip,
        ["a", "b"],
        kw.pop("data", {"n": 2**200}),
        origin=origin,
        status=status,
        created_at=now,
        updated_at=now,
        **kw,
    )


async def test_round_trip_with_big_integers_and_unicode(repository: JobStore) -> None:
    stored = job(data={"n": 2**255, "text": "日本語"})
    await repository.add(stored)
    [loaded] = await repository.get_many("1.1.1.1", [stored.id])
    assert loaded.data == {"n": 2**255, "text": "日本語"}
    assert loaded.status is JobStatus.QUEUED and loaded.containers == ["a", "b"]
    assert await repository.get_many("2.2.2.2", [stored.id]) == []


async def test_values_at_the_json_codecs_edges_read_back_equal(repository: JobStore) -> None:
    # orjson writes the rows but for what it refuses (beyond 64 bits) and reads them but for long digit runs.
    data = {
        "ints": [2**63 - 1, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**19],
        "floats": [1.0, 1e-7, 1e19, -0.0],
        "text": "é \u2028 😀",
        "digits": "1234567890123456789012",
        "none": None,
        "nested": [[{"a": []}]],
    }
    stored = job(data=data)
    await repository.add(stored)
    intermediate = [ContainerResult("a", output=data)]
    await repository.finish(stored.key, JobStatus.SUCCESS, ContainerResult("b", output=data), intermediate)
    [loaded] = await repository.get_many(stored.client_ip, [stored.id])
    for value in (loaded.data, loaded.result.output if loaded.result else None, loaded.intermediate[0].output):
        assert repr(value) == repr(data)  # repr tells 1 from 1.0


async def test_finish_keeps_result_and_intermediate(repository: JobStore) -> None:
    stored = job()
    await repository.add(stored)
    await repository.mark_running(stored.key)
    await repository.finish(
        stored.key, JobStatus.SUCCESS, ContainerResult("b", output=[1]), [ContainerResult("a", output=0)]
    )
    [loaded] = await repository.get_many(stored.client_ip, [stored.id])
    assert loaded.status is JobStatus.SUCCESS
    assert loaded.result == ContainerResult("b", output=[1])
    assert loaded.intermediate == [ContainerResult("a", output=0)]


async def test_list_ids_pending_first(repository: JobStore) -> None:
    done, waiting = job(status=JobStatus.SUCCESS), job()
    await repository.add_many([done, waiting, job(ip="other")])
    assert await repository.list_ids("1.1.1.1", None) == [waiting.id, done.id]
    assert await repository.list_ids("1.1.1.1", True) == [waiting.id]
    assert await repository.list_ids("1.1.1.1", False) == [done.id]


async def test_concurrent_writes_share_commits_and_all_land(repository: JobStore) -> None:
    jobs = [job() for _ in range(500)]
    await asyncio.gather(*(repository.add(item) for item in jobs))
    found = await repository.get_many("1.1.1.1", [item.id for item in jobs])
    assert len(found) == 500


async def test_a_bad_write_does_not_fail_its_neighbours(repository: JobStore) -> None:
    first = job()
    await repository.add(first)
    duplicate = Job(first.id, first.client_ip, ["a"], None, created_at=1, updated_at=1)
    fresh = [job() for _ in range(5)]
    results = await asyncio.gather(
        repository.add(duplicate), *(repository.add(item) for item in fresh), return_exceptions=True
    )
    assert isinstance(results[0], Exception)
    assert results[1:] == [None] * 5
    assert len(await repository.get_many("1.1.1.1", [item.id for item in fresh])) == 5


async def test_recover_fails_running_keeps_queued_and_leaves_recorded_alone(repository: JobStore) -> None:
    queued, running, stream = (
        job(),
        job(status=JobStatus.RUNNING),
        job(status=JobStatus.RUNNING, origin=JobOrigin.STREAM),
    )
    recorded = job(status=JobStatus.RUNNING, origin=JobOrigin.RECORDED)
    await repository.add_many([queued, running, stream, recorded])
    waiting, failed = await repository.recover("node restarted while the job was running")
    assert [item.id for item in waiting] == [queued.id] and failed == 2
    loaded = {item.id: item for item in await repository.get_many("1.1.1.1", [running.id, stream.id, recorded.id])}
    assert loaded[running.id].status is JobStatus.FAILED
    assert loaded[running.id].result == ContainerResult("a", error="node restarted while the job was running")
    assert loaded[stream.id].status is JobStatus.FAILED
    assert loaded[recorded.id].status is JobStatus.RUNNING


async def test_prune_removes_only_old_finished_jobs(repository: JobStore) -> None:
    old, young, pending = job(status=JobStatus.SUCCESS), job(status=JobStatus.FAILED), job()
    old.updated_at = time.time() - 1000
    await repository.add_many([old, young, pending])
    assert await repository.prune(time.time() - 500, batch=1) == 1
    remaining = {item.id for item in await repository.get_many("1.1.1.1", [old.id, young.id, pending.id])}
    assert remaining == {young.id, pending.id}


async def test_record_upserts(repository: JobStore) -> None:
    first = job(status=JobStatus.RUNNING, origin=JobOrigin.RECORDED)
    await repository.record(first)
    first.status = JobStatus.SUCCESS
    await repository.record(first)
    [loaded] = await repository.get_many(first.client_ip, [first.id])
    assert loaded.status is JobStatus.SUCCESS


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
async def test_store_uses_wal(tmp_path: Path, repository: JobStore) -> None:
    mode = sqlite3.connect(tmp_path / "store" / "node.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        ({"x": "\ud800"}, "The value holds a lone UTF-16 surrogate, which is not valid text"),
        ({"\udfff": 1}, "The value holds a lone UTF-16 surrogate, which is not valid text"),
        ([float("nan")], "The value holds NaN or Infinity, which standard JSON cannot carry"),
        ({"x": float("inf")}, "The value holds NaN or Infinity, which standard JSON cannot carry"),
        ({"x": None, "y": [float("-inf")]}, "The value holds NaN or Infinity, which standard JSON cannot carry"),
    ],
)
async def test_a_value_the_store_can_never_hold_is_refused_by_name(
    repository: JobStore, output: object, reason: str
) -> None:
    stored = job(status=JobStatus.RUNNING)
    await repository.add(stored)
    with pytest.raises(UnstorableValue) as refused:
        await repository.finish(stored.key, JobStatus.SUCCESS, ContainerResult("b", output=output), [])
    assert refused.value.message == reason
    with pytest.raises(UnstorableValue):
        await repository.add(job(data=output))
    assert repository.health.failure is None  # the store itself is fine
    # The job is untouched and can still be finished with a storable failure.
    await repository.finish(stored.key, JobStatus.FAILED, ContainerResult("b", error=reason), [])
    [loaded] = await repository.get_many(stored.client_ip, [stored.id])
    assert loaded.status is JobStatus.FAILED and loaded.result == ContainerResult("b", error=reason)


async def test_model_call_keeps_model_and_token_usage(repository: JobStore) -> None:
    call = job(status=JobStatus.RUNNING, origin=JobOrigin.MODEL, model="tiny", data={"messages": []})
    await repository.add(call)
    [running] = await repository.get_many(call.client_ip, [call.id])
    assert running.model == "tiny" and running.usage is None and running.origin is JobOrigin.MODEL
    output = {"object": "chat.completion", "choices": []}
    await repository.finish(call.key, JobStatus.SUCCESS, ContainerResult("a", output=output), [], TokenUsage(12, 34))
    [loaded] = await repository.get_many(call.client_ip, [call.id])
    assert loaded.status is JobStatus.SUCCESS and loaded.model == "tiny"
    assert loaded.usage == TokenUsage(12, 34)
    assert wire.job_result(loaded)["usage"] == {"prompt_tokens": 12, "completion_tokens": 34, "total_tokens": 46}
    # Other jobs carry neither, and keep the reference's wire shape.
    plain = job()
    await repository.add(plain)
    [other] = await repository.get_many(plain.client_ip, [plain.id])
    assert other.model is None and other.usage is None and "model" not in wire.job_result(other)


async def test_recover_fails_model_calls_caught_running(repository: JobStore) -> None:
    call = job(status=JobStatus.RUNNING, origin=JobOrigin.MODEL, model="tiny")
    await repository.add(call)
    queued, failed = await repository.recover("restarted")
    assert failed == 1 and queued == []
    [loaded] = await repository.get_many(call.client_ip, [call.id])
    assert loaded.status is JobStatus.FAILED and loaded.model == "tiny"


async def test_the_store_picks_the_repository(store_url: str, repository: JobStore) -> None:
    # One node on an SQLite file; on a server that several nodes may share, jobs owned under a heartbeat.
    if store_url.startswith("sqlite"):
        assert type(repository) is SqliteJobRepository
    else:
        assert type(repository) is ServerJobRepository and repository.owner == "node-test"
