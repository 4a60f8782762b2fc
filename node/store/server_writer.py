"""The group commit on PostgreSQL (asyncpg) without SQLAlchemy's async layer on the hot path.

A one-row transaction through SQLAlchemy async (begin, execute, commit) costs ~840 µs of the
node's CPU on asyncpg; the same transaction on asyncpg directly ~270 µs, and a statement alone
in autocommit ~150 µs (bench/README.md, "PostgreSQL vs SQLite"). So the batcher hands its
batches here: each statement (the repositories' SQLAlchemy Core statements) is compiled once
for asyncpg, and a batch runs on one connection this writer holds: a batch of one statement
as one `executemany` (atomic on its own: asyncpg runs it as one implicit transaction), a batch
of several in one transaction. Errors come back as SQLAlchemy's, so faults.py reads them as
it reads every other store error.

Statements the repository names as `joined` go further: a batch made only of them (no row
written twice) runs as one statement, each statement's rows as arrays (one_statement.py): one
round trip whatever the batch holds, where write by write it takes one per statement, plus
BEGIN, the room query and COMMIT.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, cast

from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler

from node.store.one_statement import ArrayForm, array_form, compose

# SQLSTATE classes of a server that cannot take the write now: connection exception,
# insufficient resources (disk full), operator intervention (shutdown), system error.
_UNAVAILABLE_CLASSES = ("08", "53", "57", "58")
# A statement as asyncpg runs it: the statement, its SQL, its parameters' names in order ($1, $2...),
# the values fixed in the statement, and the bind processors by position (e.g. Boolean's).
_Compiled = tuple[Executable, str, tuple[str, ...], dict[str, Any], tuple[tuple[int, Any], ...]]


# The writer's own connection (never handed back to the pool: _drop discards it). Its statements
# each write rows named by their key; one plan per statement, made once, that finds each row by
# its index: the planner, seeing a new (empty) jobs table or not knowing an array's length,
# would otherwise join a batch's arrays to a scan of the whole table.
_SESSION = (
    "SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off; "
    "SET enable_hashjoin = off; SET enable_mergejoin = off"
)


class Write(NamedTuple):
    statement: Executable
    rows: Sequence[dict[str, Any]]
    # A query that locks what bounds the rows and returns how many more may be written
    # (WriteBatcher.write_within); None: all rows are written.
    room: Executable | None = None


class _Joined(NamedTuple):
    """A batch as one statement: its SQL, its parameters, and for each write its group and whether it is bounded."""

    sql: str
    args: list[Any]
    groups: list[list[int]]  # the writes of each array form, in order
    bounded: list[bool]  # per group: an insert that takes the room


class ServerWriter:
    def __init__(self, engine: AsyncEngine, joined: Mapping[Executable, tuple[str, ...]] | None = None) -> None:
        """`joined`: the statements whose writes may share one statement, each with the names of
        the row values that identify the row it writes (a row written twice in a batch keeps the
        batch write by write, in order)."""
        self._engine = engine
        self._connection: AsyncConnection | None = None
        self._driver: Any = None  # the asyncpg connection under it
        self._compiled: dict[int, _Compiled] = {}  # by id(statement)
        self._joined = {id(statement): (statement, key) for statement, key in (joined or {}).items()}
        self._forms: dict[int, ArrayForm | None] = {}  # by id(statement)
        self._composed: dict[tuple[Any, ...], str] = {}

    async def commit(self, writes: Sequence[Write]) -> list[int]:
        """Write them in order, all or none; returns how many rows of each were written (all of
        them, but for a write with a room). Consecutive writes of one statement are one executemany."""
        try:
            driver = await self._connect()
            joined = self._join(writes)
            if joined is not None:
                return _counts(writes, joined, await driver.fetchrow(joined.sql, *joined.args))
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

    def _join(self, writes: Sequence[Write]) -> _Joined | None:
        """The batch as one statement, or None when it must run write by write."""
        groups: dict[int, list[int]] = {}  # id(statement) -> its writes, in order
        room: Executable | None = None
        seen: set[tuple[Any, ...]] = set()
        for index, write in enumerate(writes):
            entry = self._joined.get(id(write.statement))
            if entry is None or entry[0] is not write.statement or self._form(write.statement) is None:
                return None
            if write.room is not None:
                if room is not None and write.room is not room:
                    return None  # one bound per statement is all this knows
                room = write.room
            for row in write.rows:
                key = tuple(row[name] for name in entry[1])
                if key in seen:
                    return None  # one statement would write the row once: keep the writes' order instead
                seen.add(key)
            groups.setdefault(id(write.statement), []).append(index)
        if not seen:
            return None
        # In the order the statements were given, whatever the batch's: a few statements to prepare
        # (one per combination), and the bound (new jobs, given first) locked before any row.
        order = list(self._joined)
        groups = dict(sorted(groups.items(), key=lambda item: order.index(item[0])))
        statements = [writes[indexes[0]].statement for indexes in groups.values()]
        bounded = []
        for indexes in groups.values():
            rooms = {id(writes[index].room) for index in indexes}
            form = self._form(writes[indexes[0]].statement)
            assert form is not None
            if len(rooms) > 1 or (writes[indexes[0]].room is not None and not form.insert):
                return None  # some writes of a statement bounded, others not; or a bounded update
            bounded.append(writes[indexes[0]].room is not None)
        args: list[Any] = []
        room_sql: tuple[str, int] | None = None
        if room is not None:
            sql, values = self._args(room, [{}])
            args += values[0]
            room_sql = (sql, len(values[0]))
        for indexes in groups.values():
            rows = [row for index in indexes for row in writes[index].rows]
            _, values = self._args(writes[indexes[0]].statement, rows)
            args += [list(column) for column in zip(*values, strict=True)]
        key = (*(id(statement) for statement in statements), id(room) if room is not None else None, *bounded)
        composed = self._composed.get(key)
        if composed is None:
            forms = [self._form(statement) for statement in statements]
            composed = compose([form for form in forms if form is not None], room_sql, bounded)
            self._composed[key] = composed
        return _Joined(composed, args, list(groups.values()), bounded)

    def _form(self, statement: Executable) -> ArrayForm | None:
        key = id(statement)
        if key not in self._forms:
            self._forms[key] = array_form(self._sql(statement))
        return self._forms[key]

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
                await self._driver.execute(_SESSION)
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


def _counts(writes: Sequence[Write], joined: _Joined, counts: Sequence[int]) -> list[int]:
    """How many rows of each write one statement wrote: all of them, but for bounded inserts
    the first ones, as many as the room admitted (their group's count), in order."""
    written = [len(write.rows) for write in writes]
    for indexes, bounded, count in zip(joined.groups, joined.bounded, counts, strict=True):
        if not bounded:
            continue
        for index in indexes:
            written[index] = min(written[index], count)
            count -= written[index]
    return written


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
