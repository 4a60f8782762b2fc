"""What the two job repositories share: the jobs table's rows, the statements, and the cold paths.

`SqliteJobRepository` (sqlite_jobs.py: one node, stdlib sqlite3 threads on the hot path) and
`ServerJobRepository` (server_jobs.py: SQLAlchemy async on a SQL server, with the owner/lease
claims of several nodes) both implement the domain's JobRepository (node/jobs/ports.py) on top
of `JobStore`: they differ in how a write is committed, how jobs are read by id, and which
statements (owned or not) they write.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    and_,
    bindparam,
    delete,
    insert,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from node import json_codec
from node.jobs.errors import NotAdmitted, Overloaded, StoreUnavailable
from node.jobs.model import ContainerResult, Job, JobOrigin, JobStatus, TokenUsage
from node.jobs.ports import Gate
from node.store.faults import StoreHealth, read_failed, translate
from node.store.tables import jobs

PENDING = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
FINISHED = (JobStatus.SUCCESS.value, JobStatus.FAILED.value)
# Jobs the node itself runs; recorded ones belong to whoever recorded them.
OWNED = (JobOrigin.OFFCHAIN.value, JobOrigin.STREAM.value, JobOrigin.MODEL.value)


def status_is(status: JobStatus) -> ColumnElement[bool]:
    """`status = '<literal>'`, not a bound parameter: SQLite matches it to its partial ix_jobs_status
    (pending jobs only, migration 0010) when it prepares the statement; a bound status only by
    preparing the statement again with each value bound."""
    return jobs.c.status == literal_column(f"'{status.value}'")


def list_query(client_ip: str, pending: bool | None) -> Select[Any]:
    """A client's job ids and statuses in creation order (pending only, finished only, or all)."""
    query = select(jobs.c.id, jobs.c.status).where(jobs.c.client_ip == client_ip)
    if pending is True:
        query = query.where(jobs.c.status.in_(PENDING))
    elif pending is False:
        query = query.where(jobs.c.status.in_(FINISHED))
    return query.order_by(jobs.c.created_at)


# At a start: the jobs this node's predecessor was running (failed now), and the queued ones to run.
INTERRUPTED = select(jobs.c.client_ip, jobs.c.id, jobs.c.containers).where(
    status_is(JobStatus.RUNNING), jobs.c.origin.in_(OWNED)
)
QUEUED_AT_START = (
    select(jobs)
    .where(status_is(JobStatus.QUEUED), jobs.c.origin == JobOrigin.OFFCHAIN.value)
    .order_by(jobs.c.created_at)
)


def prune_victims(finished_before: float, batch: int) -> Select[Any]:
    return (
        select(jobs.c.client_ip, jobs.c.id)
        .where(jobs.c.finished_at.is_not(None), jobs.c.finished_at < finished_before)
        .limit(batch)
    )


# A finished model call's row is its caller's usage record (`caller`, migration 0012): before the
# prune deletes it, the record moves to `auth_usage`, in the same transaction, so none is lost.
ARCHIVE_USAGE = text(
    "INSERT INTO auth_usage (job_id, caller, model, prompt_tokens, completion_tokens, created_at) "
    "SELECT id, caller, model, COALESCE(prompt_tokens, 0), COALESCE(completion_tokens, 0), "
    "COALESCE(finished_at, updated_at) FROM jobs "
    "WHERE client_ip = :k_ip AND id = :k_id AND caller IS NOT NULL ON CONFLICT (job_id) DO NOTHING"
)


def dumps(value: Any) -> str:
    """Every JSON the node writes is standard JSON: NaN and Infinity are refused (ValueError, see faults.py)."""
    return json_codec.dumps(value, allow_nan=False)


def to_row(job: Job) -> dict[str, Any]:
    return {
        "client_ip": job.client_ip,
        "id": job.id,
        "origin": job.origin.value,
        "status": job.status.value,
        "containers": dumps(job.containers),
        "data": dumps(job.data),
        "requires_proof": job.requires_proof,
        "result": dumps(job.result.to_dict()) if job.result else None,
        "intermediate": dumps([step.to_dict() for step in job.intermediate]) if job.intermediate else None,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "finished_at": job.updated_at if job.status.finished else None,
        "model": job.model,
        "prompt_tokens": job.usage.prompt_tokens if job.usage else None,
        "completion_tokens": job.usage.completion_tokens if job.usage else None,
    }


# Rows are read by position, in the table's column order (SQLAlchemy rows and sqlite3 tuples alike).
COLUMNS = tuple(column.name for column in jobs.columns)
assert COLUMNS[:15] == (
    "client_ip",
    "id",
    "origin",
    "status",
    "containers",
    "data",
    "requires_proof",
    "result",
    "intermediate",
    "created_at",
    "updated_at",
    "finished_at",
    "model",
    "prompt_tokens",
    "completion_tokens",
), "from_row() reads rows by position: update it with the table"
_STATUSES = {status.value: status for status in JobStatus}
_ORIGINS = {origin.value: origin for origin in JobOrigin}
_loads = json_codec.loads


def from_row(row: Sequence[Any]) -> Job:
    client_ip, job_id, origin, status, containers, data, requires_proof, result, intermediate, created, updated = row[
        :11
    ]
    model, prompt_tokens, completion_tokens = row[12:15]
    return Job(
        id=job_id,
        client_ip=client_ip,
        containers=_loads(containers),
        data=_loads(data) if data is not None else None,
        requires_proof=bool(requires_proof),
        origin=_ORIGINS[origin],
        status=_STATUSES[status],
        result=ContainerResult.from_dict(_loads(result)) if result else None,
        intermediate=[ContainerResult.from_dict(step) for step in _loads(intermediate)] if intermediate else [],
        created_at=created,
        updated_at=updated,
        model=model,
        usage=TokenUsage(prompt_tokens, completion_tokens) if prompt_tokens is not None else None,
    )


# Reads by ids go in chunks of this many (one IN (...) each).
BY_IDS_CHUNK = 500


KEY = and_(jobs.c.client_ip == bindparam("k_ip"), jobs.c.id == bindparam("k_id"))
# The columns to_row() fills.
ROW_VALUES: dict[str, Any] = {name: bindparam(name) for name in COLUMNS[:15]}
INSERT = insert(jobs).values(ROW_VALUES)
MARK_RUNNING = update(jobs).where(KEY).values(status=bindparam("status"), updated_at=bindparam("now"))
FINISH_VALUES: dict[str, Any] = {
    "status": bindparam("status"),
    "result": bindparam("result"),
    "intermediate": bindparam("intermediate"),
    "updated_at": bindparam("now"),
    "finished_at": bindparam("now"),
    "prompt_tokens": bindparam("prompt_tokens"),
    "completion_tokens": bindparam("completion_tokens"),
    "caller": bindparam("caller"),
}
FINISH = update(jobs).where(KEY).values(FINISH_VALUES)
# The columns a recorded job (PUT /api/status) replaces when its key exists.
UPSERT_COLUMNS = (
    "origin",
    "status",
    "containers",
    "data",
    "result",
    "intermediate",
    "updated_at",
    "finished_at",
    "model",
    "prompt_tokens",
    "completion_tokens",
    # A recorded job is nobody's to run: a pending job it replaces loses its owner (NULL, as ROW_VALUES
    # leaves it), or the claims would keep seeing that owner among those of pending jobs.
    "owner",
)


def upsert(dialect_insert: Callable[[Table], Any]) -> Any:
    """INSERT … ON CONFLICT DO UPDATE for a recorded job, in the spelling of the dialect's `insert`.

    A recorded job never replaces a finished model call's row: that row is its caller's usage record."""
    statement = dialect_insert(jobs).values(ROW_VALUES)
    return statement.on_conflict_do_update(
        index_elements=["client_ip", "id"],
        set_={name: statement.excluded[name] for name in UPSERT_COLUMNS},
        where=jobs.c.caller.is_(None),
    )


def failed_row(client_ip: str, job_id: str, container: str, reason: str, now: float) -> dict[str, Any]:
    """FINISH's parameters for a job that ends failed with `reason` (interrupted by a stop or a death)."""
    return {
        "k_ip": client_ip,
        "k_id": job_id,
        "status": JobStatus.FAILED.value,
        "result": dumps(ContainerResult(container, error=reason).to_dict()),
        "intermediate": None,
        "now": now,
        "prompt_tokens": None,
        "completion_tokens": None,
        "caller": None,
    }


class JobStore:
    """The JobRepository over the jobs table, less how writes are committed and jobs read by id.

    A subclass sets the statements it writes (`_insert`, `_mark_running`, `_finish`,
    `_upsert`, in whatever form its `_commit` takes) and implements `_commit` and `get_many`.
    The cold paths (listing, recovery, pruning) go through the SQLAlchemy engine on both.
    """

    _insert: Any
    _mark_running: Any
    _finish: Any
    _upsert: Any
    _queue_size: int | None = None  # the bound the store keeps on pending jobs, if any
    # Whether `_commit` takes a gate itself: one writer that runs writes in the order they were
    # submitted (SQLite), so a job's write joins the round of the admission it is gated on.
    # Otherwise `add` waits for the admission first.
    _gates_in_order = False

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self.health = StoreHealth()

    async def _commit(self, statement: Any, rows: list[dict[str, Any]], gate: Gate | None = None) -> int:
        """Commit `statement` with `rows` (possibly together with other callers' writes); returns
        how many rows it wrote: all of them, but for new jobs beyond a shared bound (server_jobs.py).
        `gate` only where `_gates_in_order`: NotAdmitted, nothing written, when it is closed."""
        raise NotImplementedError

    async def get_many(self, client_ip: str, ids: Sequence[str]) -> list[Job]:
        raise NotImplementedError

    async def close(self) -> None:
        """Let queued writes land (the engine is disposed by its owner)."""

    def _rows(self, new_jobs: Sequence[Job]) -> list[dict[str, Any]]:
        return [to_row(job) for job in new_jobs]

    def _keyed(self, row: dict[str, Any]) -> dict[str, Any]:
        """A keyed write's parameters (the server store adds the owner its writes are conditional on)."""
        return row

    # -- writes -------------------------------------------------------------

    # Each write raises StoreUnavailable or UnstorableValue (node/jobs/errors.py) for the
    # failures the domain handles; a write that works clears the store's degraded state.

    async def _write(
        self, statement: Any, rows: Callable[..., list[dict[str, Any]]], *args: Any, gate: Gate | None = None
    ) -> int:
        """Commit `statement` with the rows `rows(*args)` builds (building them may fail too: NaN...)."""
        try:
            written = await self._commit(statement, rows(*args), gate)
        except NotAdmitted:
            raise
        except Exception as error:
            raise self._failed(error) from error
        if self.health.failure is not None:
            self.health.ok()
        return written

    def _failed(self, error: Exception) -> Exception:
        """The domain's error for a failed write (and the store marked degraded when it cannot write)."""
        translated = translate(error)
        if translated is None:
            return error
        if isinstance(translated, StoreUnavailable):
            self.health.failed(translated.cause)
        return translated

    async def add(self, job: Job, gate: Gate | None = None) -> None:
        if gate is not None and not self._gates_in_order:
            await gate.decided()  # the admission's own round first
            if not gate.open:
                raise NotAdmitted
            gate = None
        if not await self._write(self._insert, self._rows, (job,), gate=gate):
            raise self._full()

    async def add_many(self, new_jobs: Sequence[Job]) -> int:
        return await self._write(self._insert, self._rows, new_jobs)

    def _full(self) -> Overloaded:
        """Why a new job was not stored: the store's bound on pending jobs is reached (server_jobs.py)."""
        return Overloaded("Too many jobs queued, retry later", retry_after=1.0, params={"limit": self._queue_size})

    async def mark_running(self, key: tuple[str, str]) -> None:
        await self._write(self._mark_running, self._running_rows, key)

    async def finish(
        self,
        key: tuple[str, str],
        status: JobStatus,
        result: ContainerResult | None,
        intermediate: Sequence[ContainerResult],
        usage: TokenUsage | None = None,
        caller: str | None = None,
    ) -> None:
        await self._write(self._finish, self._finish_rows, key, status, result, intermediate, usage, caller)

    async def record(self, job: Job) -> None:
        await self._write(self._upsert, _one_row, job)

    def _running_rows(self, key: tuple[str, str]) -> list[dict[str, Any]]:
        row = {"k_ip": key[0], "k_id": key[1], "status": JobStatus.RUNNING.value, "now": time.time()}
        return [self._keyed(row)]

    def _finish_rows(
        self,
        key: tuple[str, str],
        status: JobStatus,
        result: ContainerResult | None,
        intermediate: Sequence[ContainerResult],
        usage: TokenUsage | None,
        caller: str | None,
    ) -> list[dict[str, Any]]:
        row = {
            "k_ip": key[0],
            "k_id": key[1],
            "status": status.value,
            "result": dumps(result.to_dict()) if result else None,
            "intermediate": dumps([step.to_dict() for step in intermediate]) if intermediate else None,
            "now": time.time(),
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None,
            "caller": caller,
        }
        return [self._keyed(row)]

    # -- reads --------------------------------------------------------------

    async def list_ids(self, client_ip: str, pending: bool | None) -> list[str]:
        query = list_query(client_ip, pending)
        try:
            async with self._engine.connect() as connection:
                rows = (await connection.execute(query)).all()
        except Exception as error:  # an I/O error while reading: a 503, not a 500
            raise read_failed(error) from error
        # Pending first, then completed, as the reference lists them.
        return [row.id for row in rows if row.status in PENDING] + [row.id for row in rows if row.status in FINISHED]

    # -- lifecycle ----------------------------------------------------------

    async def recover(self, reason: str) -> tuple[list[Job], int]:
        now = time.time()
        async with self._engine.begin() as connection:
            stuck = (await connection.execute(INTERRUPTED)).all()
            if stuck:
                await connection.execute(
                    FINISH,
                    [failed_row(row.client_ip, row.id, json.loads(row.containers)[0], reason, now) for row in stuck],
                )
            waiting = [from_row(row) for row in (await connection.execute(QUEUED_AT_START)).all()]
        return waiting, len(stuck)

    async def prune(self, finished_before: float, batch: int = 5000) -> int:
        """Delete finished jobs older than the retention, in small transactions."""
        removed = 0
        while True:
            victims = prune_victims(finished_before, batch)
            async with self._engine.begin() as connection:
                keys = (await connection.execute(victims)).all()
                if not keys:
                    return removed
                params = [{"k_ip": key.client_ip, "k_id": key.id} for key in keys]
                await connection.execute(ARCHIVE_USAGE, params)
                await connection.execute(delete(jobs).where(KEY), params)
            removed += len(keys)


def _one_row(job: Job) -> list[dict[str, Any]]:
    return [to_row(job)]
