"""The group commit on PostgreSQL (asyncpg) without SQLAlchemy's async layer on the hot path.

A one-row transaction through SQLAlchemy async (begin, execute, commit) costs ~840 µs of the
node's CPU on asyncpg; the same transaction on asyncpg directly ~270 µs, and a statement alone
in autocommit ~150 µs (bench/README.md, "PostgreSQL vs SQLite"). So the batcher hands its
batches here: each statement (the repositories' SQLAlchemy Core statements) is compiled once
for asyncpg, and a batch runs on one connection this writer holds: a batch of one statement
as one `executemany` (atomic on its own: asyncpg runs it as one implicit transaction), a batch
of several in one transaction. Errors come back as SQLAlchemy's, so faults.py reads them as
it reads every other store error.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler

# SQLSTATE classes of a server that cannot take the write now: connection exception,
# insufficient resources (disk full), operator intervention (shutdown), system error.
_UNAVAILABLE_CLASSES = ("08", "53", "57", "58")
# A statement as asyncpg runs it: the statement, its SQL, its parameters' names in order ($1, $2...),
# the values fixed in the statement, and the bind processors by position (e.g. Boolean's).
_Compiled = tuple[Executable, str, tuple[str, ...], dict[str, Any], tuple[tuple[int, Any], ...]]


class ServerWriter:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._connection: AsyncConnection | None = None
        self._driver: Any = None  # the asyncpg connection under it
        self._compiled: dict[int, _Compiled] = {}  # by id(statement)

    async def commit(self, writes: Sequence[tuple[Executable, Sequence[dict[str, Any]]]]) -> None:
        prepared = [self._args(statement, rows) for statement, rows in writes]
        try:
            driver = await self._connect()
            if len(prepared) == 1:
                await driver.executemany(*prepared[0])
            else:
                async with driver.transaction():
                    for sql, args in prepared:
                        await driver.executemany(sql, args)
        except Exception as error:
            await self._drop()  # a connection that failed once is not trusted again
            raise _as_sqlalchemy(error, prepared[0][0] if prepared else "") from error

    async def close(self) -> None:
        await self._drop()

    def _args(self, statement: Executable, rows: Sequence[dict[str, Any]]) -> tuple[str, list[list[Any]]]:
        cached = self._compiled.get(id(statement))
        if cached is None or cached[0] is not statement:
            cached = self._compile(statement)
            self._compiled[id(statement)] = cached
        _, sql, names, fixed, processors = cached
        args = []
        for row in rows:
            values = [row[name] if name not in fixed else fixed[name] for name in names]
            for index, process in processors:
                values[index] = process(values[index])
            args.append(values)
        return sql, args

    def _compile(self, statement: Executable) -> _Compiled:
        assert isinstance(statement, ClauseElement)  # every Executable the repositories write is one
        compiled = cast(SQLCompiler, statement.compile(dialect=self._engine.dialect))
        names = tuple(compiled.positiontup or ())
        # Values written into the statement itself (`.values(owner=None)`), not taken from the rows.
        fixed = {name: bind.value for name, bind in compiled.binds.items() if not bind.required}
        bind_processors = compiled._bind_processors or {}
        processors = tuple(
            (index, bind_processors[name]) for index, name in enumerate(names) if bind_processors.get(name)
        )
        return statement, str(compiled), names, fixed, processors

    async def _connect(self) -> Any:
        if self._driver is None:
            connection = await self._engine.connect()
            try:
                raw = await connection.get_raw_connection()
                self._driver = raw.driver_connection
            except BaseException:
                await connection.close()
                raise
            self._connection = connection
        return self._driver

    async def _drop(self) -> None:
        connection, self._connection, self._driver = self._connection, None, None
        if connection is None:
            return
        try:
            await connection.invalidate()
            await connection.close()
        except Exception:  # it is broken already: nothing more to release
            pass
        except asyncio.CancelledError:
            raise


def _as_sqlalchemy(error: Exception, sql: str) -> Exception:
    """asyncpg's error as SQLAlchemy would raise it (parameters left out: they may hold job data)."""
    import asyncpg  # only a PostgreSQL store gets here

    if isinstance(error, sa_exc.SQLAlchemyError):
        return error
    state = getattr(error, "sqlstate", None) or ""
    if (
        isinstance(error, (OSError, asyncio.TimeoutError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError))
        or state[:2] in _UNAVAILABLE_CLASSES
    ):
        return sa_exc.OperationalError(sql, None, error, hide_parameters=True)
    if isinstance(error, asyncpg.IntegrityConstraintViolationError):
        return sa_exc.IntegrityError(sql, None, error, hide_parameters=True)
    if isinstance(error, asyncpg.PostgresError):
        return sa_exc.DBAPIError(sql, None, error, hide_parameters=True)
    return error
