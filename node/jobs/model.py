"""Jobs and their results, free of any framework."""

from __future__ import annotations

import enum
import os
import threading
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


class JobOrigin(str, enum.Enum):
    OFFCHAIN = "offchain"  # POST /api/jobs: the node runs it from its queue
    STREAM = "stream"  # POST /api/jobs/stream: run inside the request
    RECORDED = "recorded"  # PUT /api/status: someone else runs it, we only record
    MODEL = "model"  # a call to a model (/v1): run inside the request, answered or streamed
    CHAIN = "chain"  # a subscription's delivery: run from the queue, kept in the chain's own tables


class Failure(str, enum.Enum):
    """Why a container call failed, for entrypoints that answer each kind differently (/v1)."""

    UNAVAILABLE = "unavailable"  # not running, or could not be reached
    TIMEOUT = "timeout"  # no (whole) answer in time
    REFUSED = "refused"  # the service answered 4xx: it refused the input
    FAILED = "failed"  # anything else: an error status, a broken answer


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """What a model call consumed, as the model counted it."""

    prompt_tokens: int
    completion_tokens: int

    def to_wire(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


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
    # Not on the wire, not stored: how the call failed, while the answer is being made.
    failure: Failure | None = field(default=None, compare=False)

    @property
    def failed(self) -> bool:
        return self.error is not None

    def to_dict(self) -> dict[str, JSON]:
        """Plain data (the form the store keeps): the output, or the error."""
        if self.error is not None:
            return {"container": self.container, "error": self.error}
        return {"container": self.container, "output": self.output}

    @classmethod
    def from_dict(cls, value: dict[str, JSON]) -> ContainerResult:
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
    model: str | None = None  # model calls (/v1): the model asked for
    usage: TokenUsage | None = None  # model calls: tokens in and out, once finished
    # Model calls: who the usage is billed to, stored with the outcome (the job row is the usage record).
    caller: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.client_ip, self.id)


class _RandomBytes(threading.local):
    """os.urandom read 4 KiB at a time: one system call per 256 ids, not one per id
    (on the VMs this runs on, uuid4() was 7% of accepting a job). Same source, same
    randomness; per thread, so no two threads ever share bytes."""

    def __init__(self) -> None:
        self.pool = b""
        self.offset = 0

    def take16(self) -> bytes:
        if self.offset + 16 > len(self.pool):
            self.pool, self.offset = os.urandom(4096), 0
        start = self.offset
        self.offset = start + 16
        return self.pool[start : start + 16]


_random = _RandomBytes()


def new_job_id() -> str:
    """A random (version 4) UUID, as text."""
    raw = bytearray(_random.take16())
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


@dataclass(frozen=True, slots=True)
class RunResult:
    """How a run through a chain of containers ended."""

    status: JobStatus
    result: ContainerResult
    intermediate: list[ContainerResult]
