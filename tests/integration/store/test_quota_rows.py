"""Migration 0011 (auth_windows and auth_budgets become one auth_quotas row per caller) on a real
SQLite file and a real PostgreSQL server: state carried over, 0010's exact shape and the rows that
map back on downgrade, and (SQLite) all or nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from node.store.engine import create_engine
from tests.integration.store.test_migrations import _migrate_to
from tests.integration.store.test_sqlite_lean_writes import _shape
from tests.support.postgres import fresh_database

M = 29_000_000  # a minute number

# 0010's state: 'key:a' has windows in three minutes and a budget, 'ip:1' a window only (no
# budget), 'gonka:b' a budget only (its minute's window long pruned).
_OLD_ROWS = (
    f"INSERT INTO auth_windows VALUES ('key:a', {M - 2}, 9, 90), ('key:a', {M}, 3, 120), "
    f"('key:a', {M - 1}, 5, 50), ('ip:1', {M - 1}, 1, 0)",
    "INSERT INTO auth_budgets VALUES ('key:a', 4000), ('gonka:b', 7)",
)
_CARRIED = [
    ("gonka:b", 0, 0, 0, 7),  # an empty window in minute 0: the next call turns it
    ("ip:1", M - 1, 1, 0, None),  # no budget: `used` stays NULL
    ("key:a", M, 3, 120, 4000),  # the latest window only
]
# Written at 0011: a caller counted in a window only, one with a budget only.
_NEW_ROWS = f"INSERT INTO auth_quotas VALUES ('key:n', {M + 1}, 2, 10, NULL), ('key:m', {M + 1}, 0, 0, 30)"


async def _rows(connection: AsyncConnection, table: str) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in (await connection.execute(text(f"SELECT * FROM {table} ORDER BY 1, 2"))).all()]


async def _schema(connection: AsyncConnection) -> dict[str, Any]:
    """The auth tables as either dialect reports them: columns, primary key, indexes."""

    def read(sync: Any) -> dict[str, Any]:
        inspector = inspect(sync)
        tables = sorted(name for name in inspector.get_table_names() if name.startswith("auth_"))
        return {
            table: (
                [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)],
                inspector.get_pk_constraint(table),
                sorted((i["name"], i["column_names"], i["unique"]) for i in inspector.get_indexes(table)),
            )
            for table in tables
        }

    return await connection.run_sync(read)


async def _version(connection: AsyncConnection) -> str:
    return str((await connection.execute(text("SELECT version_num FROM alembic_version"))).scalar_one())


async def test_0011_carries_the_quotas_over_and_goes_back_to_0010(store_url: str, tmp_path: Path) -> None:
    engine = create_engine(store_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_migrate_to("0010"))
            before = await _schema(connection)
            for statement in _OLD_ROWS:
                await connection.execute(text(statement))
        async with engine.begin() as connection:
            await connection.run_sync(_migrate_to("0011"))
            assert await _version(connection) == "0011"
            assert await _rows(connection, "auth_quotas") == _CARRIED
            assert not {"auth_windows", "auth_budgets"} & set(await _schema(connection))
            await connection.execute(text(_NEW_ROWS))
        async with engine.begin() as connection:
            await connection.run_sync(_migrate_to("0010", down=True))
            assert await _version(connection) == "0010"
            assert await _schema(connection) == before
            assert await _rows(connection, "auth_windows") == [
                ("ip:1", M - 1, 1, 0),
                ("key:a", M, 3, 120),
                ("key:n", M + 1, 2, 10),
            ]
            assert await _rows(connection, "auth_budgets") == [("gonka:b", 7), ("key:a", 4000), ("key:m", 30)]
        async with engine.begin() as connection:  # and up again: the same rows as before the way down
            await connection.run_sync(_migrate_to("0011"))
            assert await _rows(connection, "auth_quotas") == sorted(
                [*_CARRIED, ("key:m", 0, 0, 0, 30), ("key:n", M + 1, 2, 10, None)]
            )
    finally:
        await engine.dispose()
    if store_url.startswith("sqlite"):  # the kinds of table too (WITHOUT ROWID), as SQLite sees them
        path = Path(store_url.split("///", 1)[1])
        straight = tmp_path / "straight.db"
        engine = create_engine(f"sqlite+aiosqlite:///{straight}")
        try:
            async with engine.begin() as connection:
                await connection.run_sync(_migrate_to("0011"))
        finally:
            await engine.dispose()
        assert _shape(path) == _shape(straight)
        assert _shape(path)["auth_quotas"]["without_rowid"] == 1


async def test_0011_on_postgresql_leaves_the_other_tables_indexes_as_they_were(postgres_server: str) -> None:
    query = (
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
        "AND tablename NOT IN ('alembic_version', 'auth_windows', 'auth_budgets', 'auth_quotas') ORDER BY 1"
    )
    async with fresh_database(postgres_server) as url:
        engine = create_engine(url)
        try:
            async with engine.begin() as connection:
                await connection.run_sync(_migrate_to("0010"))
                indexes = (await connection.execute(text(query))).all()
                await connection.run_sync(_migrate_to("0011"))
                assert (await connection.execute(text(query))).all() == indexes
                quota_indexes = "SELECT indexname FROM pg_indexes WHERE tablename = 'auth_quotas'"
                assert (await connection.execute(text(quota_indexes))).scalars().all() == ["auth_quotas_pkey"]
        finally:
            await engine.dispose()


async def test_an_upgrade_that_fails_midway_leaves_0010_whole(tmp_path: Path) -> None:
    # Without the index 0011 drops last, its upgrade fails after it made auth_quotas, filled it and
    # dropped auth_budgets: Python's sqlite3 would have committed that DDL as it went.
    store = tmp_path / "node.db"
    engine = create_engine(f"sqlite+aiosqlite:///{store}")
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_migrate_to("0010"))
            for statement in _OLD_ROWS:
                await connection.execute(text(statement))
            await connection.execute(text("DROP INDEX ix_auth_windows_minute"))
        shape = _shape(store)
        with pytest.raises(OperationalError, match="no such index"):
            async with engine.begin() as connection:
                await connection.run_sync(_migrate_to("0011"))
    finally:
        await engine.dispose()
    assert _shape(store) == shape
    db = sqlite3.connect(store)
    try:
        assert db.execute("SELECT version_num FROM alembic_version").fetchone() == ("0010",)
        assert db.execute("SELECT COUNT(*) FROM auth_windows").fetchone() == (4,)
        assert db.execute("SELECT * FROM auth_budgets ORDER BY 1").fetchall() == [
            ("gonka:b", 7),
            ("key:a", 4000),
        ]
    finally:
        db.close()
