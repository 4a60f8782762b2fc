"""The auth repository on an SQLite file: its statements run on the hot-path threads (sqlite.py), one hop."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from node.store.auth_sql import AuthStore, Db
from node.store.engine import sqlite_file

T = TypeVar("T")


class _Connection:
    """A stdlib sqlite3 connection (isolation_level=None: each statement commits alone) as a Db."""

    __slots__ = ("_connection",)
    one_writer = True  # the file's writer thread: nothing changes a row between two of its statements

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def execute(self, sql: str, params: dict[str, Any]) -> list[Any]:
        return self._connection.execute(sql, params).fetchall()

    def changes(self, sql: str, params: dict[str, Any]) -> int:
        return self._connection.execute(sql, params).rowcount

    def transaction(self, work: Callable[[Db], T], statements: int = 2) -> T:
        if statements == 1:  # atomic alone: no BEGIN/COMMIT, two fewer round trips
            return work(self)
        self._connection.execute("BEGIN IMMEDIATE")
        try:
            result = work(self)
        except BaseException:
            if self._connection.in_transaction:
                self._connection.execute("ROLLBACK")
            raise
        self._connection.execute("COMMIT")
        return result


class SqliteAuthRepository(AuthStore):
    def __init__(self, engine: AsyncEngine, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        file = sqlite_file(engine)
        if file is None:
            raise ValueError("the SQLite auth repository needs a database file (not an in-memory database)")
        self._file = file

    async def _write(self, work: Callable[[Db], T]) -> T:
        return await self._file.write(lambda connection: work(_Connection(connection)))

    def _submit_write(self, work: Callable[[Db], T]) -> Awaitable[T]:
        # The file's writer runs it before any write submitted after it: a job's write gated on
        # its admission goes in the same round.
        return self._file.submit_write(lambda connection: work(_Connection(connection)))

    async def _read(self, work: Callable[[Db], T]) -> T:
        return await self._file.read(lambda connection: work(_Connection(connection)))

    async def _commit(self, writes: list[tuple[str, list[dict[str, Any]]]]) -> None:
        await self._file.commit(writes)  # joins the writer's group commit

    def _submit_commit(self, writes: list[tuple[str, list[dict[str, Any]]]]) -> Awaitable[None]:
        return self._file.submit_commit(writes)
