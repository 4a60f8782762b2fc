"""Migration 0010 (SQLite: `ix_jobs_client_created` for `ix_jobs_client_status`, `ix_jobs_status`
partial) on real stores: rows kept both ways, 0009's exact shape back on downgrade, the readers of
both indexes still searching them, recovery still finding its jobs, and nothing done on PostgreSQL."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Select, select, text
from sqlalchemy.dialects import sqlite

import node.store.auth_tables
import node.store.chain_tables
import node.store.lease_tables
import node.store.limit_tables  # noqa: F401  (each registers its tables on `metadata`)
from node.jobs.model import Job, JobOrigin, JobStatus, new_job_id
from node.store.engine import create_engine, migrate
from node.store.jobs_sql import INTERRUPTED, OWNED, PENDING, QUEUED_AT_START, list_query, prune_victims
from node.store.repositories import job_repository
from node.store.tables import jobs, metadata
from tests.integration.store.test_migrations import PG_INDEXES, pg_indexes_unchanged
from tests.integration.store.test_sqlite_lean_writes import _migrate, _rows, _shape, _version
from tests.support.postgres import fresh_database

_STATUSES = ("queued", "running", "success", "failed")


def _write_jobs(path: Path, turn: int) -> None:
    """A job in each status for two clients, so each index holds rows of both kinds."""
    connection = sqlite3.connect(path)
    try:
        with connection:
            connection.executemany(
                "INSERT INTO jobs (client_ip, id, origin, status, containers, data, requires_proof, created_at,"
                " updated_at, finished_at) VALUES (?, ?, 'offchain', ?, '[\"a\"]', '{}', 0, ?, ?, ?)",
                [
                    (ip, f"{status}-{turn}", status, turn + 1.0, turn + 2.0, None if status in PENDING else turn + 2.0)
                    for ip in ("1.1.1.1", "2.2.2.2")
                    for status in _STATUSES
                ],
            )
    finally:
        connection.close()


def _job_indexes(path: Path) -> dict[str, tuple[list[str], str | None]]:
    return {index[0]: (index[2], index[4]) for index in _shape(path)["jobs"]["indexes"] if index[0] != "pk"}


async def test_0010_keeps_the_rows_and_goes_back_to_0009s_exact_shape(tmp_path: Path) -> None:
    straight = tmp_path / "straight.db"  # migrated to 0009 and no further: the shape to go back to
    await _migrate(straight, "0009")
    store = tmp_path / "node.db"
    await _migrate(store, "0009")
    _write_jobs(store, 0)
    rows = _rows(store)

    await _migrate(store, "0010")
    assert _version(store) == "0010" and _rows(store) == rows
    shape = _shape(store)
    assert _job_indexes(store) == {
        "ix_jobs_client_created": (["client_ip", "created_at"], None),
        "ix_jobs_status": (["status"], "status = 'queued' OR status = 'running'"),
        "ix_jobs_finished_at": (["finished_at"], "finished_at IS NOT NULL"),
        "ix_jobs_owner": (["owner", "status"], "owner IS NOT NULL"),
    }
    assert {table: spec for table, spec in shape.items() if table != "jobs"} == {
        table: spec for table, spec in _shape(straight).items() if table != "jobs"
    } | {"alembic_version": shape["alembic_version"]}
    _write_jobs(store, 1)
    rows = _rows(store)

    await _migrate(store, "0009", down=True)
    assert _version(store) == "0009" and _rows(store) == rows
    assert _shape(store) == _shape(straight)
    _write_jobs(store, 2)
    rows = _rows(store)

    await _migrate(store, "0010")
    assert _rows(store) == rows and _shape(store) == shape
    # The partial index holds the pending jobs only: 2 clients x (queued, running) x 3 turns.
    connection = sqlite3.connect(store)
    try:
        indexed = "SELECT count(*) FROM jobs INDEXED BY ix_jobs_status WHERE status = 'queued' OR status = 'running'"
        assert connection.execute(indexed).fetchone() == (12,)
    finally:
        connection.close()


def _plan(connection: sqlite3.Connection, query: Select[Any], bound: bool = True) -> list[str]:
    """SQLite's plan for `query` as SQLAlchemy sends it, its parameters bound (or all NULL)."""
    compiled = query.compile(dialect=sqlite.dialect(), compile_kwargs={"render_postcompile": True})
    params = [compiled.params[name] if bound else None for name in compiled.positiontup or ()]
    return [row[3] for row in connection.execute("EXPLAIN QUERY PLAN " + str(compiled), params)]


async def test_the_readers_of_both_indexes_search_them(tmp_path: Path) -> None:
    store = tmp_path / "node.db"
    await _migrate(store, "head")
    _write_jobs(store, 0)
    # The queries node/store/jobs_sql.py runs: list_ids (pending True, False, None), recover, prune.
    lists = [list_query("1.1.1.1", pending) for pending in (True, False, None)]
    connection = sqlite3.connect(store)
    try:
        # The client's jobs in creation order straight from the index: no scan, no sort.
        for query in lists:
            assert _plan(connection, query) == ["SEARCH jobs USING INDEX ix_jobs_client_created (client_ip=?)"]
        # Recovery's plans come from its literal statuses, whatever is bound: SQLite matches a bound
        # status to the partial index only by re-preparing the statement with that value.
        for bound in (True, False):
            assert _plan(connection, INTERRUPTED, bound) == ["SEARCH jobs USING INDEX ix_jobs_status (status=?)"]
            # The few queued jobs at a start are sorted, as they were with the full index.
            assert _plan(connection, QUEUED_AT_START, bound) == [
                "SEARCH jobs USING INDEX ix_jobs_status (status=?)",
                "USE TEMP B-TREE FOR ORDER BY",
            ]
        assert _plan(connection, prune_victims(5.0, 5000)) == [
            "SEARCH jobs USING INDEX ix_jobs_finished_at (finished_at>? AND finished_at<?)"
        ]
        # What the literals spare: a bound status without its value scans the table.
        assert _plan(connection, select(jobs.c.id).where(jobs.c.status == "running"), bound=False) == ["SCAN jobs"]
    finally:
        connection.close()


def _job(status: JobStatus, origin: JobOrigin = JobOrigin.OFFCHAIN, ip: str = "1.1.1.1") -> Job:
    now = time.time()
    return Job(new_job_id(), ip, ["a"], {}, origin=origin, status=status, created_at=now, updated_at=now)


async def test_recover_and_list_ids_find_their_jobs_after_0010(store_url: str) -> None:
    engine = create_engine(store_url)
    await migrate(engine)
    repository = job_repository(engine, "node-test")
    try:
        every = {(status, origin): _job(status, origin) for status in JobStatus for origin in JobOrigin}
        await repository.add_many(list(every.values()))
        finished_later = _job(JobStatus.QUEUED)  # enters the partial index, then leaves it on FINISH
        await repository.add(finished_later)
        await repository.finish((finished_later.client_ip, finished_later.id), JobStatus.SUCCESS, None, [], None)

        pending = {job.id for (status, _), job in every.items() if status in (JobStatus.QUEUED, JobStatus.RUNNING)}
        done = {job.id for (status, _), job in every.items() if status not in (JobStatus.QUEUED, JobStatus.RUNNING)}
        assert set(await repository.list_ids("1.1.1.1", True)) == pending
        assert set(await repository.list_ids("1.1.1.1", False)) == done | {finished_later.id}

        waiting, failed = await repository.recover("restarted")
        assert [job.id for job in waiting] == [every[JobStatus.QUEUED, JobOrigin.OFFCHAIN].id]
        assert failed == len([origin for origin in JobOrigin if origin.value in OWNED])
        interrupted = [every[JobStatus.RUNNING, origin] for origin in JobOrigin if origin.value in OWNED]
        loaded = await repository.get_many("1.1.1.1", [job.id for job in interrupted])
        assert {job.status for job in loaded} == {JobStatus.FAILED}
    finally:
        await repository.close()
        await engine.dispose()


async def test_the_table_definitions_match_the_migrated_postgresql_indexes(postgres_server: str) -> None:
    # The jobs indexes differ between the dialects (tables.py: ddl_if, sqlite_where): the Table
    # definitions must build PostgreSQL's as its migrations do, as the SQLite test checks for SQLite.
    found = []
    for build in ("migrations", "metadata"):
        async with fresh_database(postgres_server) as url:
            engine = create_engine(url)
            try:
                if build == "migrations":
                    await migrate(engine)
                else:
                    async with engine.begin() as connection:
                        await connection.run_sync(metadata.create_all)
                async with engine.connect() as connection:
                    found.append((await connection.execute(text(PG_INDEXES))).all())
            finally:
                await engine.dispose()
    migrated, declared = found
    assert declared == migrated
    assert {row.indexname for row in migrated} >= {"ix_jobs_client_status", "ix_jobs_status"}


async def test_0010_changes_nothing_on_postgresql(postgres_server: str) -> None:
    before = await pg_indexes_unchanged(postgres_server, "0009", "0010")
    names = {row.indexname: row.indexdef for row in before}
    assert "ix_jobs_client_created" not in names and "WHERE" not in names["ix_jobs_status"]
    assert "ix_jobs_client_status" in names
