"""Opening the database and bringing its schema up to date."""

from __future__ import annotations

import logging
import sqlite3
import weakref
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.util.exc import CommandError
from sqlalchemy import event, text
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import migrations
from node.store.sqlite import SqliteFile

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(migrations.__file__).parent


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL: readers never wait for the writer. synchronous=NORMAL keeps every
    # committed transaction across a process crash (SIGKILL); only an OS crash
    # can lose the last commits, which is the usual WAL trade.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


# The hot-path threads of each file-backed SQLite engine (sqlite.py), closed with the engine.
_SQLITE_FILES: weakref.WeakKeyDictionary[Engine, SqliteFile] = weakref.WeakKeyDictionary()


def create_engine(url: str) -> AsyncEngine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        in_memory = not database or database == ":memory:" or "mode=memory" in str(parsed.query)
        if not in_memory:
            Path(database).parent.mkdir(parents=True, exist_ok=True)  # type: ignore[arg-type]
        # The pool serves the cold paths only (migrations, recovery, pruning, listing).
        engine = create_async_engine(url, pool_size=2, max_overflow=4)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        if not in_memory:
            _SQLITE_FILES[engine.sync_engine] = SqliteFile(str(database))
            event.listen(engine.sync_engine, "engine_disposed", _close_sqlite_file)
        return engine
    # No pre-ping: on asyncpg it costs three round trips (BEGIN, a query, ROLLBACK) per checkout,
    # i.e. per group commit and per read (a third of a job's store CPU, bench/stores.py). A
    # connection the server dropped fails its one statement instead; SQLAlchemy then recycles the
    # pool, the batcher retries the batch's writes one by one on fresh connections, and the
    # domain sees StoreUnavailable only for a write that fails again.
    return create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=False)


def sqlite_file(engine: AsyncEngine) -> SqliteFile | None:
    """The hot-path threads of a file-backed SQLite engine; None for other databases."""
    return _SQLITE_FILES.get(engine.sync_engine)


def _close_sqlite_file(engine: Engine) -> None:
    sqlite = _SQLITE_FILES.pop(engine, None)
    if sqlite is not None:
        sqlite.close()


def _upgrade(sync_connection: Any) -> None:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = sync_connection
    command.upgrade(config, "head")


# Any constant: the key of the lock that lets one node at a time migrate a server store.
_MIGRATION_LOCK = 0x1F_E7_0001


async def migrate(engine: AsyncEngine) -> None:
    """Apply every pending migration (idempotent).

    Several nodes started at once on one fresh PostgreSQL database would each create the same
    tables; a transaction-scoped advisory lock makes them take turns (the later ones find the
    schema up to date). It ends with the transaction, so a pooling proxy in transaction mode
    keeps it correct."""
    async with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        await connection.run_sync(_upgrade)


class StoreUnusable(Exception):
    """The database cannot be opened or brought up to date. The message is one line naming the
    database and the problem (never a password)."""


# What SQLite says, and what an operator should read instead.
_SQLITE_PROBLEMS = (
    ("file is not a database", "not an SQLite database (a different or corrupt file)"),
    ("database disk image is malformed", "the database file is corrupt (database disk image is malformed)"),
    ("readonly database", "read-only: the node must be able to write to the file and to its directory"),
    ("unable to open database file", "cannot be opened: check that the path exists and is writable"),
)


def _database_name(url: URL) -> str:
    if url.get_backend_name() == "sqlite":
        return url.database or ":memory:"
    return url.render_as_string(hide_password=True)


def _problem(url: URL, error: BaseException) -> str:
    if url.get_backend_name() == "sqlite" and url.database and Path(url.database).is_dir():
        return "is a directory, not a database file"
    if isinstance(error, OSError):
        where = f" {error.filename}" if error.filename else ""
        return f"cannot create its directory{where}: {error.strerror or error}"
    if isinstance(error, CommandError):  # alembic: e.g. a schema revision this version does not know
        return f"cannot bring the schema up to date: {error}"
    cause = error.orig if isinstance(error, DBAPIError) and error.orig is not None else error
    text = (str(cause).splitlines() or [type(cause).__name__])[0]
    for needle, meaning in _SQLITE_PROBLEMS:
        if needle in text:
            return meaning
    return f"{type(cause).__name__}: {text}"


async def open_store(url: str) -> AsyncEngine:
    """`create_engine` and `migrate`; a database the node cannot use raises StoreUnusable."""
    parsed = make_url(url)
    failures = (OSError, sqlite3.Error, DBAPIError, CommandError)
    try:
        engine = create_engine(url)
    except failures as error:
        raise StoreUnusable(f"store {_database_name(parsed)}: {_problem(parsed, error)}") from None
    try:
        await migrate(engine)
    except failures as error:
        await engine.dispose()
        raise StoreUnusable(f"store {_database_name(parsed)}: {_problem(parsed, error)}") from None
    return engine
