"""Domain errors: each carries what a client needs to understand it, and its kind.

The kind says what went wrong in the domain's words; the HTTP layer
(node/api/errors.py) maps kinds to statuses and renders the body.
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar


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
