"""Jobs and their results, free of any framework."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from typing import Any

JSON = Any


class JobStatus(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCESS, JobStatus.FAILED)

    @property
    def wire(self) -> str:
        # The wire keeps the reference's three values: a queued job reads as
        # "running" so that clients polling for it keep polling.
        return "running" if self is JobStatus.QUEUED else self.value


class JobOrigin(str, enum.Enum):
    OFFCHAIN = "offchain"  # POST /api/jobs: the node runs it from its queue
    STREAM = "stream"  # POST /api/jobs/stream: run inside the request
    RECORDED = "recorded"  # PUT /api/status: someone else runs it, we only record


class Location(enum.IntEnum):
    """Where a job's input comes from and its output goes (container protocol)."""

    ONCHAIN = 0
    OFFCHAIN = 1
    STREAM = 2


@dataclass(frozen=True, slots=True)
class ContainerResult:
    container: str
    output: JSON = None
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None

    def to_wire(self) -> dict[str, JSON]:
        if self.error is not None:
            return {"container": self.container, "error": self.error}
        return {"container": self.container, "output": self.output}

    @classmethod
    def from_wire(cls, value: dict[str, JSON]) -> "ContainerResult":
        return cls(value["container"], value.get("output"), value.get("error"))


@dataclass(slots=True)
class Job:
    id: str
    client_ip: str
    containers: list[str]
    data: JSON
    requires_proof: bool = False
    origin: JobOrigin = JobOrigin.OFFCHAIN
    status: JobStatus = JobStatus.QUEUED
    result: ContainerResult | None = None
    intermediate: list[ContainerResult] = field(default_factory=list)
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def key(self) -> tuple[str, str]:
        return (self.client_ip, self.id)

    def to_wire(self, with_intermediate: bool = False) -> dict[str, JSON]:
        body: dict[str, JSON] = {
            "id": self.id,
            "status": self.status.wire,
            "result": self.result.to_wire() if self.result else None,
        }
        if with_intermediate:
            steps = [step.to_wire() for step in self.intermediate]
            # The reference sends `intermediate_results`; the client's types say
            # `intermediate`. Both, so either reader finds them.
            body["intermediate_results"] = steps
            body["intermediate"] = steps
        return body


def new_job_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run through a chain of containers ended."""

    status: JobStatus
    result: ContainerResult
    intermediate: list[ContainerResult]
