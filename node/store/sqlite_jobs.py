"""The job repository on an SQLite file (one node): the hot path on stdlib sqlite3 threads.

Writes are handed straight to the file's writer thread, which joins every commit it finds
queued into one transaction (node/store/sqlite.py); reads by id go to its reader threads:
one hop each. Listing, recovery and pruning use the SQLAlchemy engine on the same file
(jobs_sql.JobStore).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from functools import lru_cache, partial
from typing import Any

from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ClauseElement

from node.jobs.errors import NotAdmitted
from node.jobs.model import Job
from node.jobs.ports import Gate
from node.store.engine import sqlite_file
from node.store.faults import read_failed
from node.store.jobs_sql import (
    BY_IDS_CHUNK,
    COLUMNS,
    FINISH,
    INSERT,
    MARK_RUNNING,
    JobStore,
    from_row,
    upsert,
)
from node.store.sqlite import GateClosed

_NAMED = sqlite.dialect(paramstyle="named")


def _sql(statement: ClauseElement) -> str:
    """The statement's SQL for the sqlite3 module (compiled once, when the repository is made)."""
    return str(statement.compile(dialect=_NAMED))


_BY_IDS_SQL = "SELECT " + ", ".join(COLUMNS) + " FROM jobs WHERE client_ip = ? AND id IN ({})"


@lru_cache(maxsize=64)
def _by_ids_sql(count: int) -> str:
    return _BY_IDS_SQL.format(",".join("?" * count))


def _read_by_ids(client_ip: str, ids: Sequence[str], connection: sqlite3.Connection) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    ids = list(dict.fromkeys(ids))  # each job once, as one IN (...) would give
    for start in range(0, len(ids), BY_IDS_CHUNK):
        chunk = ids[start : start + BY_IDS_CHUNK]
        rows += connection.execute(_by_ids_sql(len(chunk)), (client_ip, *chunk)).fetchall()
    return rows


class SqliteJobRepository(JobStore):
    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        file = sqlite_file(engine)
        if file is None:
            raise ValueError("the SQLite job repository needs a database file (not an in-memory database)")
        self._file = file
        self._insert = _sql(INSERT)
        self._mark_running = _sql(MARK_RUNNING)
        self._finish = _sql(FINISH)
        self._upsert = _sql(upsert(sqlite.insert))

    _gates_in_order = True  # one writer thread, running what it is given in order (sqlite.py)

    async def _commit(self, statement: str, rows: list[dict[str, Any]], gate: Gate | None = None) -> int:
        try:
            await self._file.commit([(statement, rows)], gate)
        except GateClosed:
            raise NotAdmitted from None
        return len(rows)  # one node: its queue's own bound is exact (node/jobs/queue.py)

    async def get_many(self, client_ip: str, ids: Sequence[str]) -> list[Job]:
        try:
            rows = await self._file.read(partial(_read_by_ids, client_ip, list(ids)))
        except Exception as error:
            raise read_failed(error) from error
        return [from_row(row) for row in rows]
