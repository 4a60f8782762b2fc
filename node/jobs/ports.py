"""What the domain needs from the outside world, as protocols.

`app.py` passes in the real adapters (SQL store, HTTP service gateway); unit
tests pass in-memory ones.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from node.jobs.model import ContainerResult, Job, JobStatus, Location, TokenUsage


class Gate(Protocol):
    """What a new job's write waits for: the admission of the call it is for (node/auth), started
    just before it. A store with one writer that runs writes in the order they were submitted
    (SQLite) reads `open` there, right before the job's write, in the same round as the admission;
    another store waits for `decided()` first. The job is written only when the gate is open."""

    @property
    def open(self) -> bool: ...

    async def decided(self) -> None:
        """Return once `open` holds its final value (never raises)."""
        ...


class JobRepository(Protocol):
    async def add(self, job: Job, gate: Gate | None = None) -> None:
        """Store a new job; Overloaded when a bound the store keeps (several nodes) is reached;
        NotAdmitted, with nothing written, when `gate` is closed."""
        ...

    async def add_many(self, jobs: Sequence[Job]) -> int:
        """Store new jobs in one write; returns how many were stored: the first ones, all of them
        unless a bound the store keeps (several nodes) is reached."""
        ...

    async def mark_running(self, key: tuple[str, str]) -> None: ...

    async def finish(
        self,
        key: tuple[str, str],
        status: JobStatus,
        result: ContainerResult | None,
        intermediate: Sequence[ContainerResult],
        usage: TokenUsage | None = None,
        caller: str | None = None,
    ) -> None:
        """Store a job's outcome; `usage` and `caller` make the row a model call's usage record."""
        ...

    async def record(self, job: Job) -> None:
        """Insert or replace a job recorded by a caller (PUT /api/status)."""
        ...

    async def get_many(self, client_ip: str, ids: Sequence[str]) -> list[Job]: ...

    async def list_ids(self, client_ip: str, pending: bool | None) -> list[str]: ...

    async def recover(self, reason: str) -> tuple[list[Job], int]:
        """Fail jobs caught mid-run with `reason`; return (queued jobs, number failed)."""
        ...

    async def prune(self, finished_before: float) -> int: ...


@dataclass(frozen=True, slots=True)
class Claimed:
    """What one claim took over from dead nodes."""

    queued: list[Job] = field(default_factory=list)  # now this node's, to run (reruns included)
    failed: int = 0  # interrupted while running, recorded as failed
    rerun: int = 0  # of `queued`, interrupted ones run again (their containers are safe to retry)


class Heartbeat(Protocol):
    """This node's heartbeat in the shared store (the lease `node:<id>`, node/leases.py), renewed
    by its own loop. While it is live, the pending jobs this node owns are its own."""

    gained: int  # times it was taken while not surely held (first, or again after running out)

    def valid_for(self) -> float:
        """Seconds the heartbeat is surely live (0 when it is not)."""
        ...


class JobClaims(Protocol):
    """Several nodes on one store: who owns each pending job (the SQL store on PostgreSQL).

    A pending job belongs to its `owner` while the owner's heartbeat is live; one renewal a
    beat per node, whatever the backlog."""

    owner: str

    async def owned(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Of `keys`, the pending jobs this node still owns."""
        ...

    async def release_queued(self) -> int:
        """Give this node's queued jobs up now, to whichever node claims them (a clean stop); returns how many."""
        ...

    async def claim(
        self, room: int, retryable: frozenset[str], restart_reason: str | None = None, batch: int = 500
    ) -> Claimed:
        """Take over the pending jobs of dead nodes and released ones (see node/store/server_jobs.py)."""
        ...


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
