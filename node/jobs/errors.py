"""Domain errors: each carries what a client needs to understand it."""

from __future__ import annotations

from typing import Any

from node.jobs.model import Failure


class JobError(Exception):
    """A request the domain refuses. `status` is the HTTP status it maps to."""

    status = 400

    def __init__(self, message: str, params: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.params = params

    def to_wire(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message}
        if self.params is not None:
            body["params"] = self.params
        return body


class InvalidRequest(JobError):
    status = 400


class Rejected(JobError):
    """A guardian rule said no. The reference answers 405, and clients expect it."""

    status = 405


class Forbidden(JobError):
    status = 403


class Overloaded(JobError):
    status = 429

    def __init__(self, message: str, retry_after: float, params: dict[str, Any] | None = None):
        super().__init__(message, params)
        self.retry_after = retry_after


class Unavailable(JobError):
    status = 503


class ContainerFailed(JobError):
    """A container call failed before any output was relayed (streams)."""

    status = 502

    def __init__(self, message: str, params: dict[str, Any] | None = None, failure: Failure = Failure.FAILED) -> None:
        super().__init__(message, params)
        self.failure = failure


class StoreUnavailable(Unavailable):
    """The store cannot write right now (disk full, I/O error, database locked); the same write may succeed later."""

    def __init__(self, cause: str) -> None:
        super().__init__(f"The job store cannot write right now: {cause}", {"cause": cause})
        self.cause = cause


class UnstorableValue(InvalidRequest):
    """A value the store can never hold: not standard JSON (NaN, Infinity) or not valid text (a lone surrogate).

    Its message never quotes the value, so it can always be stored itself.
    """
