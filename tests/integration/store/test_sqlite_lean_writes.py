"""Migration 0009 (SQLite: partial job indexes, WITHOUT ROWID auth tables) on real stores: rows
kept both ways, 0008's exact shape back on downgrade, all or nothing, the queries still on their
indexes, the Table definitions in step with it, and nothing done on PostgreSQL."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import select
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import OperationalError

import node.store.auth_tables
import node.store.chain_tables
import node.store.lease_tables
import node.store.limit_tables  # noqa: F401  (each registers its tables on `metadata`)
from node.store import auth_sql
from node.store.engine import create_engine
from node.store.tables import jobs, metadata
from tests.integration.store.test_migrations import _migrate_to, pg_indexes_unchanged

REBUILT = ("auth_signatures", "auth_windows", "auth_budgets", "auth_usage")

# Rows of every table 0009 touches: finished and pending jobs, one of them with an owner (as 0006
# left the jobs pending at its upgrade), so both partial indexes hold a row.
_ROWS = (
    "INSERT INTO jobs (client_ip, id, origin, status, containers, data, requires_proof, created_at, updated_at,"
    " finished_at, owner) VALUES"
    " ('1.1.1.1', 'done', 'offchain', 'success', '[\"a\"]', '{}', 0, 1.0, 2.0, 2.0, NULL),"
    " ('1.1.1.1', 'waiting', 'offchain', 'queued', '[\"a\"]', '{}', 0, 1.0, 1.0, NULL, 'before-upgrade'),"
    " ('2.2.2.2', 'call', 'model', 'running', '[\"chat\"]', '{}', 0, 3.0, 3.0, NULL, NULL)",
    "INSERT INTO auth_signatures VALUES ('ab' || :turn, 100.5), ('cd' || :turn, 200.5)",
    "INSERT INTO auth_windows VALUES ('key:a', 29000000 + :turn, 3, 120), ('ip:1.1.1.1', 29000000 + :turn, 1, 0)",
    "INSERT INTO auth_budgets VALUES ('key:a' || :turn, 4000), ('gonka:b' || :turn, 7)",
    "INSERT INTO auth_usage VALUES ('done' || :turn, 'key:a', 'tiny', 5, 3, 2.0),"
    " ('x' || :turn, 'ip:1', NULL, 0, 0, 3.5)",
)
# The same at head, where 0011 made the windows and budgets one quota row per caller.
_HEAD_ROWS = (
    *_ROWS[:2],
    "INSERT INTO auth_quotas VALUES ('key:a', 29000000 + :turn, 3, 120, 4000),"
    " ('ip:1.1.1.1', 29000000 + :turn, 1, 0, NULL)",
    _ROWS[4],
)


def _url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


async def _migrate(path: Path, revision: str, down: bool = False) -> None:
    engine = create_engine(_url(path))
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_migrate_to(revision, down=down))
    finally:
        await engine.dispose()


def _shape(path: Path) -> dict[str, Any]:
    """What SQLite makes of the schema, table by table: columns, primary key, rowid or not, and
    each index's columns, uniqueness and WHERE (names of automatic indexes aside)."""
    connection = sqlite3.connect(path)
    try:
        shape: dict[str, Any] = {}
        for name, kind, without_rowid in connection.execute(
            "SELECT name, type, wr FROM pragma_table_list WHERE schema = 'main' AND name NOT LIKE 'sqlite%'"
        ):
            indexes = []
            for index, unique, origin, partial in connection.execute(
                'SELECT name, "unique", origin, partial FROM pragma_index_list(?)', (name,)
            ):
                # A WITHOUT ROWID table's primary key has no row of its own in sqlite_master.
                found = connection.execute("SELECT sql FROM sqlite_master WHERE name = ?", (index,)).fetchone()
                sql = found[0] if found else None
                where = sql.split(" WHERE ", 1)[1] if sql and " WHERE " in sql else None
                indexed = [row[0] for row in connection.execute("SELECT name FROM pragma_index_info(?)", (index,))]
                shown = index if origin == "c" else origin  # sqlite_autoindex_*_N numbering is SQLite's own
                indexes.append((shown, unique, indexed, bool(partial), where))
            columns = list(connection.execute(f"SELECT * FROM pragma_table_xinfo('{name}')"))
            shape[name] = {"kind": kind, "without_rowid": without_rowid, "columns": columns, "indexes": sorted(indexes)}
        return shape
    finally:
        connection.close()


def _rows(path: Path) -> dict[str, list[Any]]:
    connection = sqlite3.connect(path)
    try:
        return {
            table: sorted(connection.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
            for table in ("jobs", *REBUILT)
        }
    finally:
        connection.close()


def _version(path: Path) -> str:
    connection = sqlite3.connect(path)
    try:
        return str(connection.execute("SELECT version_num FROM alembic_version").fetchone()[0])
    finally:
        connection.close()


def _write(path: Path, turn: int, rows: tuple[str, ...] = _ROWS) -> None:
    connection = sqlite3.connect(path)
    try:
        with connection:
            if turn == 0:
                connection.execute(rows[0])
            for statement in rows[1:]:
                connection.execute(statement, {"turn": turn})
    finally:
        connection.close()


async def test_0009_keeps_the_rows_and_goes_back_to_0008s_exact_shape(tmp_path: Path) -> None:
    straight = tmp_path / "straight.db"  # migrated to 0008 and no further: the shape to go back to
    await _migrate(straight, "0008")
    store = tmp_path / "node.db"
    await _migrate(store, "0008")
    _write(store, 0)
    rows = _rows(store)

    await _migrate(store, "0009")
    assert _version(store) == "0009" and _rows(store) == rows
    shape = _shape(store)
    assert {table: shape[table]["without_rowid"] for table in (*REBUILT, "auth_keys", "jobs")} == {
        **dict.fromkeys(REBUILT, 1),
        "auth_keys": 0,
        "jobs": 0,
    }
    partial = {index[0]: index[4] for index in shape["jobs"]["indexes"] if index[3]}
    assert partial == {"ix_jobs_owner": "owner IS NOT NULL", "ix_jobs_finished_at": "finished_at IS NOT NULL"}
    _write(store, 1)  # the rebuilt tables take rows as before (same keys, same columns)
    rows = _rows(store)

    await _migrate(store, "0008", down=True)
    assert _version(store) == "0008" and _rows(store) == rows
    assert _shape(store) == _shape(straight)
    _write(store, 2)
    rows = _rows(store)

    await _migrate(store, "0009")
    assert _rows(store) == rows and _shape(store) == shape


async def test_an_upgrade_that_fails_midway_leaves_0008_whole(tmp_path: Path) -> None:
    # The last table's staging name already taken: the rebuild fails after the jobs indexes and
    # the other three tables were changed. Python's sqlite3 would have committed that DDL as it
    # went (it opens a transaction only before a data write); all of it must roll back.
    store = tmp_path / "node.db"
    await _migrate(store, "0008")
    _write(store, 0)
    connection = sqlite3.connect(store)
    connection.execute("CREATE TABLE auth_usage_0009 (x)")
    connection.close()
    shape, rows = _shape(store), _rows(store)

    with pytest.raises(OperationalError, match="auth_usage_0009 already exists"):
        await _migrate(store, "0009")
    assert _version(store) == "0008" and _shape(store) == shape and _rows(store) == rows


def _plan(connection: sqlite3.Connection, sql: str, params: Any) -> list[str]:
    return [row[3] for row in connection.execute("EXPLAIN QUERY PLAN " + sql, params)]


async def test_the_queries_still_search_their_indexes(tmp_path: Path) -> None:
    store = tmp_path / "node.db"
    await _migrate(store, "head")
    _write(store, 0, _HEAD_ROWS)
    # The prune's query (node/store/jobs_sql.py), as SQLAlchemy sends it to SQLite.
    prune = (
        select(jobs.c.client_ip, jobs.c.id)
        .where(jobs.c.finished_at.is_not(None), jobs.c.finished_at < 5.0)
        .limit(5000)
        .compile(dialect=sqlite.dialect())
    )
    params = {
        "caller": "key:a",
        "minute": 29000000,
        "delta": 1,
        "now": 150.0,
        "signature": "ab0",
        "job_id": "done0",
    }
    connection = sqlite3.connect(store)
    try:
        assert _plan(connection, str(prune), [prune.params[name] for name in prune.positiontup or ()]) == [
            "SEARCH jobs USING INDEX ix_jobs_finished_at (finished_at>? AND finished_at<?)"
        ]
        by_key = {
            "SELECT expires_at FROM auth_signatures WHERE signature = :signature": (
                "SEARCH auth_signatures USING PRIMARY KEY (signature=?)"
            ),
            "SELECT caller FROM auth_usage WHERE job_id = :job_id": "SEARCH auth_usage USING PRIMARY KEY (job_id=?)",
            auth_sql.READ_QUOTA: "SEARCH auth_quotas USING PRIMARY KEY (caller=?)",
            **{sql: "SEARCH auth_quotas USING PRIMARY KEY (caller=?)" for sql in auth_sql.SETTLE_QUOTA.values()},
            auth_sql.PRUNE_SIGNATURES: (
                "SEARCH auth_signatures USING COVERING INDEX ix_auth_signatures_expires_at (expires_at<?)"
            ),
        }
        assert {sql: _plan(connection, sql, params) for sql in by_key} == {sql: [plan] for sql, plan in by_key.items()}
        usage = "SELECT caller, SUM(prompt_tokens) FROM auth_usage WHERE caller = :caller AND created_at >= :now"
        assert _plan(connection, usage, params) == [
            "SEARCH auth_usage USING INDEX ix_auth_usage_caller_created (caller=? AND created_at>?)"
        ]
    finally:
        connection.close()


async def test_the_table_definitions_match_the_migrated_sqlite_schema(tmp_path: Path) -> None:
    # node/store/*tables.py say what the migrations build (Alembic's autogenerate compares neither
    # partial indexes nor WITHOUT ROWID, so SQLite's own view of both schemas is compared).
    migrated = tmp_path / "migrated.db"
    await _migrate(migrated, "head")
    declared = tmp_path / "declared.db"
    engine = create_sync_engine(f"sqlite:///{declared}")
    try:
        metadata.create_all(engine)
    finally:
        engine.dispose()
    expected = _shape(migrated)
    del expected["alembic_version"]
    assert _shape(declared) == expected


async def test_0009_changes_nothing_on_postgresql(postgres_server: str) -> None:
    before = await pg_indexes_unchanged(postgres_server, "0008", "0009")
    assert any("WHERE" not in row.indexdef and row.indexname == "ix_jobs_owner" for row in before)
