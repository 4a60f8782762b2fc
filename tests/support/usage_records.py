"""Usage records as the /v1 handler leaves them: model calls stored, then finished naming their caller."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text

from node.jobs.model import ContainerResult, Job, JobOrigin, JobStatus, TokenUsage
from node.store.engine import create_engine, migrate
from node.store.jobs_sql import JobStore
from node.store.repositories import job_repository

# (job id, caller, model, prompt tokens, completion tokens, when the call finished)
Call = tuple[str, str, str | None, int, int, float]


@asynccontextmanager
async def finished_calls(url: str, calls: list[Call]) -> AsyncIterator[JobStore]:
    """Store and finish `calls` on the store at `url`; yields the job repository that wrote them."""
    engine = create_engine(url)
    await migrate(engine)
    jobs = job_repository(engine, "node-usage")
    try:
        for job_id, caller, model, prompt, completion, at in calls:
            call = Job(
                job_id,
                "127.0.0.1",
                ["chat"],
                {},
                origin=JobOrigin.MODEL,
                status=JobStatus.RUNNING,
                created_at=at,
                updated_at=at,
                model=model,
            )
            await jobs.add(call)
            await jobs.finish(
                call.key,
                JobStatus.SUCCESS,
                ContainerResult("chat", output={}),
                [],
                TokenUsage(prompt, completion),
                caller,
            )
            async with engine.begin() as connection:  # dated as asked (FINISH stamps the present)
                await connection.execute(
                    text("UPDATE jobs SET finished_at = :at, updated_at = :at WHERE id = :id"), {"at": at, "id": job_id}
                )
        yield jobs
    finally:
        await jobs.close()
        await engine.dispose()
