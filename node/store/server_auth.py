"""The auth repository on a SQL server (PostgreSQL): its statements run on asyncpg directly.

The rules (auth_sql.py) are synchronous code over a `Db`; here they run in a greenlet
(SQLAlchemy's `greenlet_spawn`) whose statements await asyncpg (`await_only`), on a connection
checked out of the engine's pool. Through SQLAlchemy's own connection a hop took three round
trips for one statement (BEGIN, the statement, ROLLBACK or COMMIT) and ~0.3 ms more of the node's
CPU; here one statement is one round trip (autocommit), and only a hop of several writes, or
one whose refusal must be read back exactly, runs in a transaction.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import await_only, greenlet_spawn

from node.jobs.errors import StoreUnavailable
from node.store.auth_sql import AuthStore, Db
from node.store.faults import translate
from node.store.server_writer import as_sqlalchemy

T = TypeVar("T")

_NAMED = re.compile(r"(?<![:\w]):(\w+)")


@lru_cache(maxsize=256)  # the rules' SQL is a few fixed texts
def _positional(sql: str) -> tuple[str, tuple[str, ...]]:
    """`:name` parameters as asyncpg's `$n` (a name used twice is one parameter), and the names in order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return _NAMED.sub(number, sql), tuple(names)


class _Asyncpg:
    """An asyncpg connection as a Db, inside greenlet_spawn: each statement commits alone unless
    it runs in `transaction`."""

    __slots__ = ("_driver",)
    one_writer = False  # other nodes write the same rows

    def __init__(self, driver: Any) -> None:
        self._driver = driver

    def _await(self, sql: str, run: Callable[..., Any], params: dict[str, Any]) -> Any:
        query, names = _positional(sql)
        try:
            return await_only(run(query, *[params[name] for name in names]))
        except Exception as error:  # as SQLAlchemy would raise it, so faults.py reads it
            raise as_sqlalchemy(error, sql) from error

    def execute(self, sql: str, params: dict[str, Any]) -> list[Any]:
        return list(self._await(sql, self._driver.fetch, params))

    def changes(self, sql: str, params: dict[str, Any]) -> int:
        status = self._await(sql, self._driver.execute, params)  # e.g. "INSERT 0 1", "UPDATE 3"
        return int(status.rsplit(" ", 1)[-1])

    def transaction(self, work: Callable[[Db], T], statements: int = 2) -> T:
        if statements == 1:  # atomic alone: one round trip
            return work(self)
        transaction = self._driver.transaction()
        self._end(transaction.start, "BEGIN")
        try:
            result = work(self)
        except BaseException:
            self._end(transaction.rollback, "ROLLBACK")  # before the pool has the connection back
            raise
        self._end(transaction.commit, "COMMIT")
        return result

    @staticmethod
    def _end(step: Callable[[], Any], sql: str) -> None:
        try:
            await_only(step())
        except Exception as error:
            raise as_sqlalchemy(error, sql) from error


class ServerAuthRepository(AuthStore):
    def __init__(self, engine: AsyncEngine, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self._engine = engine

    async def _write(self, work: Callable[[Db], T]) -> T:
        async with self._engine.connect() as connection:
            driver = (await connection.get_raw_connection()).driver_connection
            try:
                return await greenlet_spawn(work, _Asyncpg(driver))
            except Exception as error:
                if isinstance(translate(error), StoreUnavailable):
                    # SQLAlchemy does not see this error: drop the pool's connections as it would.
                    await connection.invalidate()
                    self._engine.sync_engine.pool.dispose()
                raise

    async def _read(self, work: Callable[[Db], T]) -> T:
        return await self._write(work)

    async def _commit(self, writes: list[tuple[str, list[dict[str, Any]]]]) -> None:
        def work(db: Db) -> None:
            for sql, rows in writes:
                for row in rows:
                    db.changes(sql, row)

        await self._write(lambda db: db.transaction(work, sum(len(rows) for _, rows in writes)))
