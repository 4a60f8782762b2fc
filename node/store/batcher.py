"""Group commit: many concurrent writes share one transaction.

Each caller waits until its own write is committed, so "stored before
acknowledged" holds, but a burst of N requests costs one commit, not N.
For SQL servers (server_jobs.py); on SQLite the writer thread does the grouping
itself (sqlite.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import Executable

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class _Write:
    statement: Executable
    rows: Sequence[dict[str, Any]]
    room: Executable | None  # see write_within
    done: asyncio.Future[int]  # how many of `rows` were written


class WriteBatcher:
    def __init__(self, engine: AsyncEngine, max_batch: int = 1000) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._waiting: list[_Write] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="store-writer")

    async def close(self) -> None:
        # Let queued writes land before closing.
        while self._waiting:
            await asyncio.sleep(0.01)
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def write(self, statement: Executable, rows: Sequence[dict[str, Any]]) -> None:
        await self._submit(statement, rows, None)

    async def write_within(self, statement: Executable, rows: Sequence[dict[str, Any]], room: Executable) -> int:
        """Write the first of `rows` that fit; returns how many.

        `room` is a query that locks what bounds the rows (until the commit) and returns how
        many more may be written; it runs once per transaction, and the writes of that
        transaction share what it returned, in order.
        """
        return await self._submit(statement, rows, room)

    async def _submit(self, statement: Executable, rows: Sequence[dict[str, Any]], room: Executable | None) -> int:
        if self._task is None or self._task.done():
            raise RuntimeError("the store writer is not running")
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Write(statement, rows, room, done))
        self._wakeup.set()
        return await done

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._waiting:
                batch = self._waiting[: self._max_batch]
                del self._waiting[: self._max_batch]
                await self._commit(batch)

    async def _commit(self, batch: list[_Write]) -> None:
        try:
            async with self._engine.begin() as connection:
                written = await _execute(connection, batch)
        except Exception as error:
            if len(batch) == 1:
                log.error("a store write failed: %s", error)
                _settle(batch, error, [])
                return
            # One bad write must not fail its neighbours: retry them one by one.
            for item in batch:
                await self._commit([item])
            return
        _settle(batch, None, written)


async def _execute(connection: AsyncConnection, batch: list[_Write]) -> list[int]:
    """Run the writes in order, consecutive ones of the same statement as one executemany."""
    written: list[int] = []
    rooms: dict[int, int] = {}  # id(room query) -> how many more rows it admits
    merged: list[tuple[Executable, list[dict[str, Any]]]] = []
    for write in batch:
        count = len(write.rows)
        if write.room is not None:
            key = id(write.room)
            if key not in rooms:
                for statement, rows in merged:  # what comes before counts first
                    await connection.execute(statement, rows)
                merged = []
                rooms[key] = int((await connection.execute(write.room)).scalar_one())
            count = max(0, min(count, rooms[key]))
            rooms[key] -= count
        written.append(count)
        if not count:
            continue
        rows = list(write.rows[:count])
        if merged and merged[-1][0] is write.statement:
            merged[-1][1].extend(rows)
        else:
            merged.append((write.statement, rows))
    for statement, rows in merged:
        await connection.execute(statement, rows)
    return written


def _settle(batch: list[_Write], error: Exception | None, written: list[int]) -> None:
    for index, write in enumerate(batch):
        if write.done.done():  # its caller was cancelled
            continue
        if error is not None:
            write.done.set_exception(error)
        else:
            write.done.set_result(written[index])
