"""The job desk's answers as the API renders them: the wire form is what the desk tests pin down."""

from __future__ import annotations

from typing import Any

from node.api import wire
from node.jobs.desk import DelegatedRequest, JobDesk, JobRequest


async def rendered(desk: JobDesk, client_ip: str, ids: list[str], intermediate: bool) -> list[dict[str, Any]]:
    return [wire.job_result(job, intermediate) for job in await desk.results(client_ip, ids)]


async def rendered_batch(
    desk: JobDesk, client_ip: str, items: list[JobRequest | DelegatedRequest]
) -> list[dict[str, Any]]:
    return [wire.batch_answer(answer) for answer in await desk.submit_batch(client_ip, items)]
