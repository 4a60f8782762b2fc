"""Group commit: many concurrent writes share one transaction.

Each caller waits until its own write is committed, so "stored before
acknowledged" holds, but a burst of N requests costs one commit, not N.
SQLite files hand each write straight to their writer thread, which does the
grouping itself (sqlite.py); other databases group here, in a task, and
PostgreSQL's batches run on asyncpg directly (server_writer.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ClauseElement, Executable

from node.store.engine import sqlite_file
from node.store.server_writer import ServerWriter

log = logging.getLogger(__name__)

Write = tuple[Executable, Sequence[dict[str, Any]]]
_SQLITE_NAMED = sqlite.dialect(paramstyle="named")


class WriteBatcher:
    def __init__(self, engine: AsyncEngine, max_batch: int = 1000) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._waiting: list[tuple[Write, asyncio.Future[None]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # SQLite files commit on their writer thread, one hop per batch (sqlite.py).
        self._sqlite = sqlite_file(engine)
        self._sql: dict[int, tuple[Executable, str]] = {}
        # PostgreSQL over asyncpg: batches run on asyncpg directly (server_writer.py).
        self._server = ServerWriter(engine) if engine.dialect.driver == "asyncpg" else None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="store-writer")

    async def close(self) -> None:
        # Let queued writes land before closing.
        while self._waiting:
            await asyncio.sleep(0.01)
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._server is not None:
            await self._server.close()

    async def write(self, statement: Executable, rows: Sequence[dict[str, Any]]) -> None:
        if self._task is None or self._task.done():
            raise RuntimeError("the store writer is not running")
        if self._sqlite is not None:
            await self._sqlite.commit([(self._text(statement), list(rows))])
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(((statement, rows), future))
        self._wakeup.set()
        await future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._waiting:
                batch = self._waiting[: self._max_batch]
                del self._waiting[: self._max_batch]
                await self._commit(batch)

    async def _commit(self, batch: list[tuple[Write, asyncio.Future[None]]]) -> None:
        try:
            writes = _merge([write for write, _ in batch])
            if self._server is not None:
                await self._server.commit(writes)
            else:
                async with self._engine.begin() as connection:
                    for statement, rows in writes:
                        await connection.execute(statement, list(rows))
        except Exception as error:
            if len(batch) == 1:
                log.error("a store write failed: %s", error)
                _settle(batch, error)
                return
            # One bad write must not fail its neighbours: retry them one by one.
            for item in batch:
                await self._commit([item])
            return
        _settle(batch, None)

    def _text(self, statement: Executable) -> str:
        """The statement's SQL for the sqlite3 module, compiled once (statements are module constants)."""
        cached = self._sql.get(id(statement))
        if cached is None or cached[0] is not statement:
            assert isinstance(statement, ClauseElement)  # every Executable the repositories write is one
            cached = (statement, str(statement.compile(dialect=_SQLITE_NAMED)))
            self._sql[id(statement)] = cached
        return cached[1]


def _merge(writes: list[Write]) -> list[Write]:
    """Join consecutive writes of the same statement into one executemany."""
    merged: list[tuple[Executable, list[dict[str, Any]]]] = []
    for statement, rows in writes:
        if merged and merged[-1][0] is statement:
            merged[-1][1].extend(rows)
        else:
            merged.append((statement, list(rows)))
    return merged  # type: ignore[return-value]


def _settle(batch: list[tuple[Write, asyncio.Future[None]]], error: Exception | None) -> None:
    for _, future in batch:
        if future.done():  # its caller was cancelled
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(None)
