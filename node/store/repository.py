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

from sqlalchemy import and_, bindparam, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from node.jobs.errors import StoreUnavailable
from node.jobs.model import ContainerResult, Job, JobOrigin, JobStatus, TokenUsage
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
_INSERT = insert(jobs)
_MARK_RUNNING = update(jobs).where(_KEY).values(status=bindparam("status"), updated_at=bindparam("now"))
_FINISH = (
    update(jobs)
    .where(_KEY)
    .values(
        status=bindparam("status"),
        result=bindparam("result"),
        intermediate=bindparam("intermediate"),
        updated_at=bindparam("now"),
        finished_at=bindparam("now"),
        prompt_tokens=bindparam("prompt_tokens"),
        completion_tokens=bindparam("completion_tokens"),
    )
)


class SqlJobRepository:
    def __init__(self, engine: AsyncEngine, batcher: WriteBatcher) -> None:
        self._engine = engine
        self._batcher = batcher
        self._sqlite = sqlite_file(engine)
        self._upsert = self._build_upsert(engine.dialect.name)
        self.health = StoreHealth()

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
            statement = sqlite.insert(jobs)
        elif dialect == "postgresql":
            statement = postgresql.insert(jobs)
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
            await self._batcher.write(_INSERT, [_row(job)])
        except Exception as error:
            raise self._failed(error) from error
        if self.health.failure is not None:
            self.health.ok()

    async def add_many(self, new_jobs: Sequence[Job]) -> None:
        try:
            await self._batcher.write(_INSERT, [_row(job) for job in new_jobs])
        except Exception as error:
            raise self._failed(error) from error
        if self.health.failure is not None:
            self.health.ok()

    async def mark_running(self, key: tuple[str, str]) -> None:
        try:
            await self._batcher.write(
                _MARK_RUNNING,
                [{"k_ip": key[0], "k_id": key[1], "status": JobStatus.RUNNING.value, "now": time.time()}],
            )
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
            await self._batcher.write(
                _FINISH,
                [
                    {
                        "k_ip": key[0],
                        "k_id": key[1],
                        "status": status.value,
                        "result": _dumps(result.to_dict()) if result else None,
                        "intermediate": _dumps([step.to_dict() for step in intermediate]) if intermediate else None,
                        "now": time.time(),
                        "prompt_tokens": usage.prompt_tokens if usage else None,
                        "completion_tokens": usage.completion_tokens if usage else None,
                    }
                ],
            )
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
