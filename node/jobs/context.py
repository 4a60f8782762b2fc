"""The job a piece of work belongs to, carried in a context variable.

The job queue runs each job inside `job_context(job_id)`, so anything logged
while it runs, down to the service gateway, can be tagged with the job's id
(node/logs.py reads `current_job_id`).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

_job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)


def current_job_id() -> str | None:
    return _job_id.get()


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    token = _job_id.set(job_id)
    try:
        yield
    finally:
        _job_id.reset(token)
