"""In-memory adapters for domain unit tests (the adapter boundary, nothing else)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from node.jobs.errors import NotAdmitted, Overloaded
from node.jobs.model import ContainerResult, Job, JobStatus, Location, TokenUsage
from node.jobs.ports import Gate


class MemoryRepository:
    def __init__(self) -> None:
        self.jobs: dict[tuple[str, str], Job] = {}
        self.writes = 0
        self.marked_running: list[tuple[str, str]] = []
        self.reads = 0  # get_many calls
        self.fail_writes: Exception | None = None  # raised by add/add_many when set
        self.pruned = 0  # finished jobs prune() removes next time
        self.room: int | None = None  # how many more new jobs a store-kept bound (several nodes) takes

    async def add(self, job: Job, gate: Gate | None = None) -> None:
        if gate is not None:  # as a store with no ordered writer does: the admission first
            await gate.decided()
            if not gate.open:
                raise NotAdmitted
        if not await self.add_many([job]):
            raise Overloaded("Too many jobs queued, retry later", retry_after=1.0, params={"limit": 0})

    async def add_many(self, jobs: Sequence[Job]) -> int:
        if self.fail_writes is not None:
            raise self.fail_writes
        self.writes += 1
        if self.room is not None:  # the first ones that fit, as the server store does
            jobs = jobs[: max(0, self.room)]
            self.room -= len(jobs)
        for job in jobs:
            self.jobs[job.key] = job
        return len(jobs)

    async def mark_running(self, key: tuple[str, str]) -> None:
        self.marked_running.append(key)
        self.jobs[key].status = JobStatus.RUNNING

    async def finish(
        self,
        key: tuple[str, str],
        status: JobStatus,
        result: ContainerResult | None,
        intermediate: Sequence[ContainerResult],
        usage: TokenUsage | None = None,
        caller: str | None = None,
    ) -> None:
        job = self.jobs[key]
        job.status, job.result, job.intermediate, job.usage = status, result, list(intermediate), usage
        job.caller = caller

    async def record(self, job: Job) -> None:
        self.jobs[job.key] = job

    async def get_many(self, client_ip: str, ids: Sequence[str]) -> list[Job]:
        self.reads += 1
        return [self.jobs[(client_ip, i)] for i in ids if (client_ip, i) in self.jobs]

    async def list_ids(self, client_ip: str, pending: bool | None) -> list[str]:
        mine = [job for (ip, _), job in self.jobs.items() if ip == client_ip]
        if pending is True:
            mine = [job for job in mine if not job.status.finished]
        elif pending is False:
            mine = [job for job in mine if job.status.finished]
        return [job.id for job in mine]

    async def recover(self, reason: str) -> tuple[list[Job], int]:
        return [], 0

    async def prune(self, finished_before: float) -> int:
        removed, self.pruned = self.pruned, 0
        return removed


class ScriptedGateway:
    """Answers each container with a function of the data; records every call."""

    def __init__(self, behaviours: dict[str, Any] | None = None, delay: float = 0.0) -> None:
        self.behaviours = behaviours or {}
        self.calls: list[tuple[str, Any, Location, Location, bool]] = []
        self.delay = delay
        self.release = asyncio.Event()
        self.release.set()

    async def run(
        self, container_id: str, data: Any, source: Location, destination: Location, requires_proof: bool
    ) -> ContainerResult:
        self.calls.append((container_id, data, source, destination, requires_proof))
        await self.release.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        behaviour = self.behaviours.get(container_id, lambda value: value)
        outcome = behaviour(data)
        if isinstance(outcome, Exception):
            return ContainerResult(container_id, error=str(outcome))
        return ContainerResult(container_id, output=outcome)

    async def stream(self, container_id: str, data: Any) -> AsyncIterator[bytes]:
        yield b""
        for word in str(data).split():
            yield word.encode() + b" "

    async def resources(self, model_id: str | None) -> dict[str, Any]:
        return {}
