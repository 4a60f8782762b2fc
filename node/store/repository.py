"""The SQL job repository: the domain's JobRepository over SQLAlchemy Core.

Writes go through the group-commit batcher; reads use the pool directly.
SQL that only one dialect understands stays in this module.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from functools import lru_cache, partial
from typing import Any

from sqlalchemy import and_, bindparam, delete, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from node.jobs.errors import StoreUnavailable
from node.jobs.model import ContainerResult, Job, JobOrigin, JobStatus, TokenUsage
from node.jobs.ports import Claimed
from node.store.batcher import WriteBatcher
from node.store.engine import sqlite_file
from node.store.faults import StoreHealth, translate
from node.store.tables import jobs

PENDING = (JobStatus.QUEUED.value, JobStatus.RUNNING.value)
FINISHED = (JobStatus.SUCCESS.value, JobStatus.FAILED.value)
# Jobs the node itself runs; recorded ones belong to whoever recorded them.
OWNED = (JobOrigin.OFFCHAIN.value, JobOrigin.STREAM.value, JobOrigin.MODEL.value)

# allow_nan=False: every JSON the node writes is standard JSON (NaN is refused, see faults.py).
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _row(job: Job) -> dict[str, Any]:
    return {
        "client_ip": job.client_ip,
        "id": job.id,
        "origin": job.origin.value,
        "status": job.status.value,
        "containers": _dumps(job.containers),
        "data": _dumps(job.data),
        "requires_proof": job.requires_proof,
        "result": _dumps(job.result.to_dict()) if job.result else None,
        "intermediate": _dumps([step.to_dict() for step in job.intermediate]) if job.intermediate else None,
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
    "client_ip", "id", "origin", "status", "containers", "data", "requires_proof",
    "result", "intermediate", "created_at", "updated_at", "finished_at",
    "model", "prompt_tokens", "completion_tokens",
), "_job() reads rows by position: update it with the table"
_STATUSES = {status.value: status for status in JobStatus}
_ORIGINS = {origin.value: origin for origin in JobOrigin}
_loads = json.loads


def _job(row: Sequence[Any]) -> Job:
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


# The read by ids on the SQLite hot path (sqlite.py), by number of ids.
_BY_IDS_SQL = "SELECT " + ", ".join(COLUMNS) + " FROM jobs WHERE client_ip = ? AND id IN ({})"
_BY_IDS_CHUNK = 500


@lru_cache(maxsize=64)
def _by_ids_sql(count: int) -> str:
    return _BY_IDS_SQL.format(",".join("?" * count))


def _read_by_ids(client_ip: str, ids: Sequence[str], connection: sqlite3.Connection) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    ids = list(dict.fromkeys(ids))  # each job once, as one IN (...) would give
    for start in range(0, len(ids), _BY_IDS_CHUNK):
        chunk = ids[start : start + _BY_IDS_CHUNK]
        rows += connection.execute(_by_ids_sql(len(chunk)), (client_ip, *chunk)).fetchall()
    return rows


_KEY = and_(jobs.c.client_ip == bindparam("k_ip"), jobs.c.id == bindparam("k_id"))
# The columns _row() fills; the claim columns only on a shared store (_INSERT_OWNED).
_ROW_VALUES: dict[str, Any] = {name: bindparam(name) for name in COLUMNS[:15]}
_INSERT = insert(jobs).values(_ROW_VALUES)
_INSERT_OWNED = insert(jobs).values({name: bindparam(name) for name in (*COLUMNS[:15], "owner", "lease_until")})
_MARK_RUNNING = update(jobs).where(_KEY).values(status=bindparam("status"), updated_at=bindparam("now"))
_FINISH_VALUES: dict[str, Any] = {
    "status": bindparam("status"),
    "result": bindparam("result"),
    "intermediate": bindparam("intermediate"),
    "updated_at": bindparam("now"),
    "finished_at": bindparam("now"),
    "prompt_tokens": bindparam("prompt_tokens"),
    "completion_tokens": bindparam("completion_tokens"),
}
_FINISH = update(jobs).where(_KEY).values(_FINISH_VALUES)


# Shared stores (several nodes): a node's writes to a pending job hold only while it owns the
# job, so that a node that lost a job (its lease ran out, another took it) cannot overwrite it.
_OWNED_BY = and_(_KEY, jobs.c.owner == bindparam("k_owner"))
_MARK_RUNNING_OWNED = update(jobs).where(_OWNED_BY).values(status=bindparam("status"), updated_at=bindparam("now"))
_FINISH_OWNED = update(jobs).where(_OWNED_BY).values({**_FINISH_VALUES, "owner": None, "lease_until": None})


class SqlJobRepository:
    """`owner` (a node id) turns on claims for a store shared by several nodes (PostgreSQL):
    every pending job this node writes carries its id and a lease of `lease_seconds`."""

    def __init__(
        self, engine: AsyncEngine, batcher: WriteBatcher, owner: str | None = None, lease_seconds: float = 0.0
    ) -> None:
        self._engine = engine
        self._batcher = batcher
        self._sqlite = sqlite_file(engine)
        self._upsert = self._build_upsert(engine.dialect.name)
        self.health = StoreHealth()
        if owner is not None and (self._sqlite is not None or lease_seconds <= 0):
            raise ValueError("job claims need a shared store (PostgreSQL) and a positive lease")
        self.owner = owner
        self._lease_seconds = lease_seconds
        self._insert = _INSERT if owner is None else _INSERT_OWNED

    def _rows(self, new_jobs: Sequence[Job]) -> list[dict[str, Any]]:
        rows = [_row(job) for job in new_jobs]
        if self.owner is not None:
            until = time.time() + self._lease_seconds
            for row, job in zip(rows, new_jobs, strict=True):
                owned = job.origin.value in OWNED and not job.status.finished
                row["owner"] = self.owner if owned else None
                row["lease_until"] = until if owned else None
        return rows

    def _failed(self, error: Exception) -> Exception:
        """The domain's error for a failed write (and the store marked degraded when it cannot write)."""
        translated = translate(error)
        if translated is None:
            return error
        if isinstance(translated, StoreUnavailable):
            self.health.failed(translated.cause)
        return translated

    @staticmethod
    def _build_upsert(dialect: str) -> Any:
        columns = (
            "origin", "status", "containers", "data", "result", "intermediate", "updated_at", "finished_at",
            "model", "prompt_tokens", "completion_tokens",
        )
        statement: sqlite.Insert | postgresql.Insert
        if dialect == "sqlite":
            statement = sqlite.insert(jobs).values(_ROW_VALUES)
        elif dialect == "postgresql":
            statement = postgresql.insert(jobs).values(_ROW_VALUES)
        else:  # pragma: no cover - only the two supported dialects reach here
            raise ValueError(f"unsupported database dialect {dialect!r}")
        return statement.on_conflict_do_update(
            index_elements=["client_ip", "id"],
            set_={name: statement.excluded[name] for name in columns},
        )

    # -- writes -------------------------------------------------------------

    # Each write raises StoreUnavailable or UnstorableValue (node/jobs/errors.py) for the
    # failures the domain handles; a write that works clears the store's degraded state.

    async def add(self, job: Job) -> None:
        try:
            await self._batcher.write(self._insert, self._rows([job]))
        except Exception as error:
            raise self._failed(error) from error
        if self.health.failure is not None:
            self.health.ok()

    async def add_many(self, new_jobs: Sequence[Job]) -> None:
        try:
            await self._batcher.write(self._insert, self._rows(new_jobs))
        except Exception as error:
            raise self._failed(error) from error
        if self.health.failure is not None:
            self.health.ok()

    async def mark_running(self, key: tuple[str, str]) -> None:
        try:
            row = {"k_ip": key[0], "k_id": key[1], "status": JobStatus.RUNNING.value, "now": time.time()}
            if self.owner is None:
                await self._batcher.write(_MARK_RUNNING, [row])
            else:
                await self._batcher.write(_MARK_RUNNING_OWNED, [{**row, "k_owner": self.owner}])
        except Exception as error:
            raise self._failed(error) from error
        if self.health.failure is not None:
            self.health.ok()

    async def finish(
        self,
        key: tuple[str, str],
        status: JobStatus,
        result: ContainerResult | None,
        intermediate: Sequence[ContainerResult],
        usage: TokenUsage | None = None,
    ) -> None:
        try:
            row = {
                "k_ip": key[0],
                "k_id": key[1],
                "status": status.value,
                "result": _dumps(result.to_dict()) if result else None,
                "intermediate": _dumps([step.to_dict() for step in intermediate]) if intermediate else None,
                "now": time.time(),
                "prompt_tokens": usage.prompt_tokens if usage else None,
                "completion_tokens": usage.completion_tokens if usage else None,
            }
            if self.owner is None:
                await self._batcher.write(_FINISH, [row])
            else:
                await self._batcher.write(_FINISH_OWNED, [{**row, "k_owner": self.owner}])
        except Exception as error:
            raise self._failed(error) from error
        if self.health.failure is not None:
            self.health.ok()

    async def record(self, job: Job) -> None:
        try:
            await self._batcher.write(self._upsert, [_row(job)])
        except Exception as error:
            raise self._failed(error) from error
        if self.health.failure is not None:
            self.health.ok()

    # -- reads --------------------------------------------------------------

    async def get_many(self, client_ip: str, ids: Sequence[str]) -> list[Job]:
        try:
            if self._sqlite is not None:
                return [_job(row) for row in await self._sqlite.read(partial(_read_by_ids, client_ip, list(ids)))]
            query = select(jobs).where(jobs.c.client_ip == client_ip, jobs.c.id.in_(list(ids)))
            async with self._engine.connect() as connection:
                rows = (await connection.execute(query)).all()
        except Exception as error:  # an I/O error while reading: a 503, not a 500
            translated = translate(error)
            raise (translated if isinstance(translated, StoreUnavailable) else error) from error
        return [_job(row) for row in rows]

    async def list_ids(self, client_ip: str, pending: bool | None) -> list[str]:
        query = select(jobs.c.id, jobs.c.status).where(jobs.c.client_ip == client_ip)
        if pending is True:
            query = query.where(jobs.c.status.in_(PENDING))
        elif pending is False:
            query = query.where(jobs.c.status.in_(FINISHED))
        query = query.order_by(jobs.c.created_at)
        try:
            async with self._engine.connect() as connection:
                rows = (await connection.execute(query)).all()
        except Exception as error:  # an I/O error while reading: a 503, not a 500
            translated = translate(error)
            raise (translated if isinstance(translated, StoreUnavailable) else error) from error
        # Pending first, then completed, as the reference lists them.
        return [row.id for row in rows if row.status in PENDING] + [row.id for row in rows if row.status in FINISHED]

    # -- lifecycle ----------------------------------------------------------

    async def recover(self, reason: str) -> tuple[list[Job], int]:
        now = time.time()
        interrupted = select(jobs.c.client_ip, jobs.c.id, jobs.c.containers).where(
            jobs.c.status == JobStatus.RUNNING.value, jobs.c.origin.in_(OWNED)
        )
        queued = (
            select(jobs)
            .where(jobs.c.status == JobStatus.QUEUED.value, jobs.c.origin == JobOrigin.OFFCHAIN.value)
            .order_by(jobs.c.created_at)
        )
        async with self._engine.begin() as connection:
            stuck = (await connection.execute(interrupted)).all()
            if stuck:
                await connection.execute(
                    _FINISH,
                    [
                        {
                            "k_ip": row.client_ip,
                            "k_id": row.id,
                            "status": JobStatus.FAILED.value,
                            "result": _dumps(ContainerResult(json.loads(row.containers)[0], error=reason).to_dict()),
                            "intermediate": None,
                            "now": now,
                            "prompt_tokens": None,
                            "completion_tokens": None,
                        }
                        for row in stuck
                    ],
                )
            waiting = [_job(row) for row in (await connection.execute(queued)).all()]
        return waiting, len(stuck)

    # -- claims (several nodes on one store) ----------------------------------

    async def renew(self) -> None:
        """Extend the lease of every pending job this node owns (its heartbeat)."""
        assert self.owner is not None
        statement = (
            update(jobs)
            .where(jobs.c.owner == self.owner, jobs.c.status.in_(PENDING))
            .values(lease_until=time.time() + self._lease_seconds)
        )
        async with self._engine.begin() as connection:
            await connection.execute(statement)

    async def owned(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Of `keys`, the pending jobs this node still owns."""
        assert self.owner is not None
        found: set[tuple[str, str]] = set()
        keys = list(keys)
        for start in range(0, len(keys), _BY_IDS_CHUNK):
            chunk = keys[start : start + _BY_IDS_CHUNK]
            query = select(jobs.c.client_ip, jobs.c.id).where(
                jobs.c.owner == self.owner,
                jobs.c.status.in_(PENDING),
                or_(*(and_(jobs.c.client_ip == ip, jobs.c.id == job_id) for ip, job_id in chunk)),
            )
            async with self._engine.connect() as connection:
                found.update((row.client_ip, row.id) for row in (await connection.execute(query)).all())
        return found

    async def release_queued(self) -> int:
        """End the lease of this node's queued jobs now, so that other nodes claim them at once."""
        assert self.owner is not None
        statement = (
            update(jobs)
            .where(jobs.c.owner == self.owner, jobs.c.status == JobStatus.QUEUED.value)
            .values(lease_until=0.0)
        )
        async with self._engine.begin() as connection:
            return (await connection.execute(statement)).rowcount or 0

    async def claim(
        self, room: int, retryable: frozenset[str], restart_reason: str | None = None, batch: int = 500
    ) -> Claimed:
        """Take over the pending jobs of dead nodes (their lease ran out), at most `batch` rows.

        Rows are locked with FOR UPDATE SKIP LOCKED, so two nodes claiming at once never
        take the same job. Queued jobs become this node's, up to `room` of them. Running
        ones were interrupted: they are failed, or queued again here when every container
        of their chain is in `retryable`. With `restart_reason` (at start), the jobs this
        node's id still owns from before a restart are taken too, failed with that reason.
        """
        assert self.owner is not None
        now = time.time()
        dead = and_(jobs.c.owner != self.owner, jobs.c.lease_until < now)
        mine = jobs.c.owner == self.owner
        query = (
            select(jobs)
            .where(
                jobs.c.status.in_(PENDING),
                jobs.c.origin.in_(OWNED),
                or_(dead, mine) if restart_reason is not None else dead,
            )
            .order_by(jobs.c.created_at)
            .limit(batch)
            .with_for_update(skip_locked=True)
        )
        until = now + self._lease_seconds
        taken: list[Job] = []
        failures: list[dict[str, Any]] = []
        rerun = 0
        async with self._engine.begin() as connection:
            for row in (await connection.execute(query)).all():
                job = _job(row)
                runnable = job.origin is JobOrigin.OFFCHAIN and (
                    job.status is JobStatus.QUEUED or all(name in retryable for name in job.containers)
                )
                if runnable:
                    if len(taken) >= room:
                        continue  # stays with the dead node's lease: claimed when there is room
                    if job.status is JobStatus.RUNNING:
                        rerun += 1
                    job.status = JobStatus.QUEUED
                    taken.append(job)
                    continue
                reason = (
                    restart_reason if row.owner == self.owner else f"node {row.owner} died while the job was running"
                )
                failures.append(
                    {
                        "k_ip": job.client_ip,
                        "k_id": job.id,
                        "status": JobStatus.FAILED.value,
                        "result": _dumps(ContainerResult(job.containers[0], error=reason).to_dict()),
                        "intermediate": None,
                        "now": now,
                        "prompt_tokens": None,
                        "completion_tokens": None,
                        "k_owner": row.owner,
                    }
                )
            if taken:
                await connection.execute(
                    update(jobs)
                    .where(_KEY)
                    .values(status=JobStatus.QUEUED.value, owner=self.owner, lease_until=until, updated_at=now),
                    [{"k_ip": job.client_ip, "k_id": job.id} for job in taken],
                )
            if failures:
                await connection.execute(_FINISH_OWNED, failures)
        return Claimed(taken, len(failures), rerun)

    async def prune(self, finished_before: float, batch: int = 5000) -> int:
        """Delete finished jobs older than the retention, in small transactions."""
        removed = 0
        while True:
            victims = (
                select(jobs.c.client_ip, jobs.c.id)
                .where(jobs.c.finished_at.is_not(None), jobs.c.finished_at < finished_before)
                .limit(batch)
            )
            async with self._engine.begin() as connection:
                keys = (await connection.execute(victims)).all()
                if not keys:
                    return removed
                await connection.execute(
                    delete(jobs).where(_KEY),
                    [{"k_ip": key.client_ip, "k_id": key.id} for key in keys],
                )
            removed += len(keys)
