"""Domain errors: each carries what a client needs to understand it, and its kind.

The kind says what went wrong in the domain's words; the HTTP layer
(node/api/errors.py) maps kinds to statuses and renders the body.
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar

from node.jobs.model import Failure


class ErrorKind(enum.Enum):
    INVALID = "invalid"  # the request is malformed or names something that cannot be
    REJECTED = "rejected"  # a guardian rule (or a missing feature) said no to a well-formed request
    FORBIDDEN = "forbidden"  # this caller may not do this at all
    OVERLOADED = "overloaded"  # a bound is reached: try again after `retry_after`
    UNAVAILABLE = "unavailable"  # the node cannot do it right now
    SERVICE_FAILED = "service_failed"  # an inference service failed before any output was relayed


class JobError(Exception):
    """A request the domain refuses."""

    kind: ClassVar[ErrorKind] = ErrorKind.INVALID

    def __init__(self, message: str, params: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.params = params


class InvalidRequest(JobError):
    kind = ErrorKind.INVALID


class Rejected(JobError):
    """A guardian rule said no. The reference answers 405, and clients expect it."""

    kind = ErrorKind.REJECTED


class Forbidden(JobError):
    kind = ErrorKind.FORBIDDEN


class Overloaded(JobError):
    kind = ErrorKind.OVERLOADED

    def __init__(self, message: str, retry_after: float, params: dict[str, Any] | None = None):
        super().__init__(message, params)
        self.retry_after = retry_after


class Unavailable(JobError):
    kind = ErrorKind.UNAVAILABLE


class ContainerFailed(JobError):
    """A container call failed before any output was relayed (streams)."""

    kind = ErrorKind.SERVICE_FAILED

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


class NotAdmitted(Exception):
    """A new job was not written: the admission it was gated on (ports.Gate) let its call in not.

    Not a JobError: the caller answers with the admission's own refusal."""
