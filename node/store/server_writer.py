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
from typing import Any, NamedTuple, cast

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


class Write(NamedTuple):
    statement: Executable
    rows: Sequence[dict[str, Any]]
    # A query that locks what bounds the rows and returns how many more may be written
    # (WriteBatcher.write_within); None: all rows are written.
    room: Executable | None = None


class ServerWriter:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._connection: AsyncConnection | None = None
        self._driver: Any = None  # the asyncpg connection under it
        self._compiled: dict[int, _Compiled] = {}  # by id(statement)

    async def commit(self, writes: Sequence[Write]) -> list[int]:
        """Write them in order, all or none; returns how many rows of each were written (all of
        them, but for a write with a room). Consecutive writes of one statement are one executemany."""
        try:
            driver = await self._connect()
            if any(write.room is not None for write in writes):
                async with driver.transaction():
                    return await self._within(driver, writes)
            prepared = [self._args(write.statement, write.rows) for write in _merge(writes)]
            if len(prepared) == 1:
                await driver.executemany(*prepared[0])
            else:
                async with driver.transaction():
                    for sql, args in prepared:
                        await driver.executemany(sql, args)
        except Exception as error:
            await self._drop()  # a connection that failed once is not trusted again
            raise as_sqlalchemy(error, self._sql(writes[0].statement) if writes else "") from error
        return [len(write.rows) for write in writes]

    async def _within(self, driver: Any, writes: Sequence[Write]) -> list[int]:
        """Run in a transaction: each room query once, before the first write it bounds (the writes
        before it first, as they count too), then the rows that fit."""
        written: list[int] = []
        rooms: dict[int, int] = {}  # id(room query) -> how many more rows it admits
        pending: list[Write] = []
        for write in writes:
            count = len(write.rows)
            if write.room is not None:
                key = id(write.room)
                if key not in rooms:
                    for merged in _merge(pending):
                        await driver.executemany(*self._args(merged.statement, merged.rows))
                    pending = []
                    sql, args = self._args(write.room, [{}])
                    rooms[key] = int(await driver.fetchval(sql, *args[0]))
                count = max(0, min(count, rooms[key]))
                rooms[key] -= count
            written.append(count)
            if count:
                pending.append(Write(write.statement, write.rows[:count]))
        for merged in _merge(pending):
            await driver.executemany(*self._args(merged.statement, merged.rows))
        return written

    def _sql(self, statement: Executable) -> str:
        return self._args(statement, [])[0]

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


def _merge(writes: Sequence[Write]) -> list[Write]:
    """Join consecutive writes of the same statement into one executemany (rooms are left out)."""
    merged: list[tuple[Executable, list[dict[str, Any]]]] = []
    for write in writes:
        if merged and merged[-1][0] is write.statement:
            merged[-1][1].extend(write.rows)
        else:
            merged.append((write.statement, list(write.rows)))
    return [Write(statement, rows) for statement, rows in merged]


def as_sqlalchemy(error: Exception, sql: str) -> Exception:
    """asyncpg's error as SQLAlchemy would raise it (parameters left out: they may hold job data)."""
    import asyncpg  # only a PostgreSQL store gets here

    if isinstance(error, sa_exc.SQLAlchemyError):
        return error
    state = getattr(error, "sqlstate", None) or ""
    # InternalClientError: the connection's protocol state broke (seen when the server ended the
    # session mid-use); the connection is dropped, and a new one may well work.
    unusable = (OSError, asyncio.TimeoutError, asyncpg.InterfaceError, asyncpg.InternalClientError)
    if isinstance(error, (*unusable, asyncpg.PostgresConnectionError)) or state[:2] in _UNAVAILABLE_CLASSES:
        return sa_exc.OperationalError(sql, None, error, hide_parameters=True)
    if isinstance(error, asyncpg.IntegrityConstraintViolationError):
        return sa_exc.IntegrityError(sql, None, error, hide_parameters=True)
    if isinstance(error, asyncpg.PostgresError):
        return sa_exc.DBAPIError(sql, None, error, hide_parameters=True)
    return error
