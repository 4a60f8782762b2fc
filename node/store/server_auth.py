"""The auth repository on a SQL server (PostgreSQL): its statements run on SQLAlchemy's connections."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from node.store.auth_sql import AuthStore, Db

T = TypeVar("T")


class _Connection:
    """SQLAlchemy's (sync, under run_sync) connection as a Db: it begins at the first statement."""

    __slots__ = ("_connection",)

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    def execute(self, sql: str, params: dict[str, Any]) -> list[Any]:
        result = self._connection.execute(text(sql), params)
        return list(result.all()) if result.returns_rows else []

    def changes(self, sql: str, params: dict[str, Any]) -> int:
        return int(self._connection.execute(text(sql), params).rowcount)

    def transaction(self, work: Callable[[Db], T], statements: int = 2) -> T:
        try:
            result = work(self)
        except BaseException:
            self._connection.rollback()
            raise
        self._connection.commit()
        return result


class ServerAuthRepository(AuthStore):
    def __init__(self, engine: AsyncEngine, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self._engine = engine

    async def _write(self, work: Callable[[Db], T]) -> T:
        async with self._engine.connect() as connection:
            return await connection.run_sync(lambda sync: work(_Connection(sync)))

    async def _read(self, work: Callable[[Db], T]) -> T:
        async with self._engine.connect() as connection:
            return await connection.run_sync(lambda sync: work(_Connection(sync)))

    async def _commit(self, writes: list[tuple[str, list[dict[str, Any]]]]) -> None:
        def work(db: Db) -> None:
            for sql, rows in writes:
                db.execute(sql, rows[0])

        await self._write(lambda db: db.transaction(work, len(writes)))
