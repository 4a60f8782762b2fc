"""Group commit: many concurrent writes share one transaction.

Each caller waits until its own write is committed, so "stored before
acknowledged" holds, but a burst of N requests costs one commit, not N.
For SQL servers (server_jobs.py): the batches run on asyncpg directly
(server_writer.py). On SQLite the writer thread does the grouping itself (sqlite.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Executable

from node.store.server_writer import ServerWriter, Write

log = logging.getLogger(__name__)


class WriteBatcher:
    def __init__(
        self, engine: AsyncEngine, max_batch: int = 1000, joined: Mapping[Executable, tuple[str, ...]] | None = None
    ) -> None:
        self._max_batch = max_batch
        self._waiting: list[tuple[Write, asyncio.Future[int]]] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._server = ServerWriter(engine, joined)  # joined: see ServerWriter

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="store-writer")

    async def close(self) -> None:
        # Let queued writes land before closing.
        while self._waiting:
            await asyncio.sleep(0.01)
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._server.close()

    async def write(self, statement: Executable, rows: Sequence[dict[str, Any]]) -> None:
        await self._submit(Write(statement, rows))

    async def write_within(self, statement: Executable, rows: Sequence[dict[str, Any]], room: Executable) -> int:
        """Write the first of `rows` that fit; returns how many.

        `room` is a query that locks what bounds the rows (until the commit) and returns how
        many more may be written; it runs once per transaction, and the writes of that
        transaction share what it returned, in order.
        """
        return await self._submit(Write(statement, rows, room))

    async def _submit(self, write: Write) -> int:
        if self._task is None or self._task.done():
            raise RuntimeError("the store writer is not running")
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting.append((write, done))
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

    async def _commit(self, batch: list[tuple[Write, asyncio.Future[int]]]) -> None:
        try:
            written = await self._server.commit([write for write, _ in batch])
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


def _settle(batch: list[tuple[Write, asyncio.Future[int]]], error: Exception | None, written: list[int]) -> None:
    for index, (_, done) in enumerate(batch):
        if done.done():  # its caller was cancelled
            continue
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(written[index])
