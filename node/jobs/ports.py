"""What the domain needs from the outside world, as protocols.

`app.py` passes in the real adapters (SQL store, HTTP service gateway); unit
tests pass in-memory ones.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from node.jobs.model import ContainerResult, Job, JobStatus, Location, TokenUsage


class JobRepository(Protocol):
    async def add(self, job: Job) -> None: ...

    async def add_many(self, jobs: Sequence[Job]) -> None: ...

    async def mark_running(self, key: tuple[str, str]) -> None: ...

    async def finish(
        self,
        key: tuple[str, str],
        status: JobStatus,
        result: ContainerResult | None,
        intermediate: Sequence[ContainerResult],
        usage: TokenUsage | None = None,
    ) -> None: ...

    async def record(self, job: Job) -> None:
        """Insert or replace a job recorded by a caller (PUT /api/status)."""
        ...

    async def get_many(self, client_ip: str, ids: Sequence[str]) -> list[Job]: ...

    async def list_ids(self, client_ip: str, pending: bool | None) -> list[str]: ...

    async def recover(self, reason: str) -> tuple[list[Job], int]:
        """Fail jobs caught mid-run with `reason`; return (queued jobs, number failed)."""
        ...

    async def prune(self, finished_before: float) -> int: ...


class ServiceGateway(Protocol):
    """Calls the inference services (containers) over the container protocol."""

    async def run(
        self,
        container_id: str,
        data: Any,
        source: Location,
        destination: Location,
        requires_proof: bool,
    ) -> ContainerResult: ...

    def stream(self, container_id: str, data: Any) -> AsyncIterator[bytes]: ...

    async def resources(self, model_id: str | None) -> dict[str, Any]: ...
