"""Store failures in the domain's terms, and whether the store can write right now.

Two kinds matter to the domain (node/jobs/errors.py): a write that may succeed
later (disk full, I/O error, a locked database, a lost connection:
StoreUnavailable, retried by the job queue and answered 503 to a POST), and a
value that can never be stored (UnstorableValue: the job fails with the reason).
"""

from __future__ import annotations

import logging
import sqlite3
import time

from sqlalchemy import exc as sa_exc

from node.jobs.errors import StoreUnavailable, UnstorableValue

log = logging.getLogger(__name__)

MAX_CAUSE_TEXT = 200


def _cause_text(error: BaseException) -> str:
    text = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return text if len(text) <= MAX_CAUSE_TEXT else text[:MAX_CAUSE_TEXT] + "…"


def translate(error: BaseException) -> StoreUnavailable | UnstorableValue | None:
    """The domain error for a store failure, or None when it is neither kind (a bug: let it through)."""
    cause: BaseException = error
    if isinstance(error, sa_exc.StatementError) and error.orig is not None:
        cause = error.orig
    # sqlite3 raises the UnicodeEncodeError itself; asyncpg wraps it (as its DataError's cause).
    link: BaseException | None = cause
    for _ in range(4):
        if link is None:
            break
        if isinstance(link, UnicodeEncodeError):
            return UnstorableValue("The value holds a lone UTF-16 surrogate, which is not valid text")
        link = link.__cause__ or link.__context__
    if isinstance(cause, ValueError) and "JSON compliant" in str(cause):  # json.dumps(allow_nan=False)
        return UnstorableValue("The value holds NaN or Infinity, which standard JSON cannot carry")
    if isinstance(cause, RecursionError):
        return UnstorableValue("The value is nested too deeply to store")
    if (
        isinstance(cause, (sqlite3.OperationalError, OSError))
        or isinstance(error, (sa_exc.OperationalError, sa_exc.InterfaceError))
        or (isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated)
    ):
        return StoreUnavailable(_cause_text(cause))
    return None


def read_failed(error: Exception) -> Exception:
    """What a failed read raises: StoreUnavailable for an I/O error (a 503, not a 500), else the error."""
    translated = translate(error)
    return translated if isinstance(translated, StoreUnavailable) else error


class StoreHealth:
    """Whether the last write worked; /health reports it. Set by every write, read by /health."""

    def __init__(self) -> None:
        self.failure: tuple[str, float] | None = None  # (cause, since: Unix time)

    def failed(self, cause: str) -> None:
        if self.failure is None:
            log.warning("the store cannot write: %s (retrying; /health reports the store degraded)", cause)
            self.failure = (cause, time.time())

    def ok(self) -> None:
        if self.failure is not None:
            log.warning("the store writes again after %.1fs", time.time() - self.failure[1])
            self.failure = None
