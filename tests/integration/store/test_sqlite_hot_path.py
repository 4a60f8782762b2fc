"""The SQLite hot path (node/store/sqlite.py): writer and reader threads on a real file."""

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from node.jobs.model import Job, new_job_id
from node.store.engine import create_engine, migrate, sqlite_file
from node.store.sqlite import GroupCommit, SqliteFile, _run_calls, connect
from node.store.sqlite_jobs import SqliteJobRepository


def _job(ip: str = "1.1.1.1") -> Job:
    now = time.time()
    return Job(new_job_id(), ip, ["a"], {"n": 1}, created_at=now, updated_at=now)


def _store_threads() -> set[str]:
    return {thread.name for thread in threading.enumerate() if thread.name.startswith("store-")}


async def test_file_engines_get_threads_that_close_with_the_engine(tmp_path: Path) -> None:
    before = _store_threads()
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'node.db'}")
    assert sqlite_file(engine) is not None
    assert _store_threads() - before
    await engine.dispose()
    assert sqlite_file(engine) is None
    assert _store_threads() == before


async def test_concurrent_reads_and_writes_see_every_committed_job(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'node.db'}")
    await migrate(engine)
    repository = SqliteJobRepository(engine)
    try:
        jobs = [_job() for _ in range(300)]

        async def add_then_read(job: Job) -> list[Job]:
            await repository.add(job)
            return await repository.get_many(job.client_ip, [job.id])

        found = await asyncio.gather(*(add_then_read(job) for job in jobs))
        assert [items[0].id for items in found] == [job.id for job in jobs]
        # Read by many ids at once, past the per-statement chunk.
        assert len(await repository.get_many("1.1.1.1", [job.id for job in jobs] * 3)) == 300
    finally:
        await repository.close()
        await engine.dispose()
    # Committed for real: another process (here, a plain connection) sees them.
    count = sqlite3.connect(tmp_path / "node.db").execute("SELECT count(*) FROM jobs").fetchone()[0]
    assert count == 300


async def test_errors_reach_the_caller_and_the_threads_keep_working(tmp_path: Path) -> None:
    database = SqliteFile(str(tmp_path / "plain.db"))
    try:
        await database.write(lambda connection: connection.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)"))
        await database.write(lambda connection: connection.execute("INSERT INTO t VALUES (1)"))
        with pytest.raises(sqlite3.IntegrityError):
            await database.write(lambda connection: connection.execute("INSERT INTO t VALUES (1)"))
        with pytest.raises(sqlite3.OperationalError):  # readers are read-only
            await database.read(lambda connection: connection.execute("INSERT INTO t VALUES (2)"))
        rows = await database.read(lambda connection: connection.execute("SELECT x FROM t").fetchall())
        assert rows == [(1,)]
    finally:
        database.close()


async def test_a_closed_store_refuses_work_instead_of_hanging(tmp_path: Path) -> None:
    database = SqliteFile(str(tmp_path / "plain.db"))
    pending = database.read(lambda connection: connection.execute("SELECT 1").fetchall())
    task = asyncio.ensure_future(pending)
    await asyncio.sleep(0)  # submitted in this loop turn, not yet handed to a thread
    database.close()
    assert await asyncio.wait_for(task, 5) == [(1,)]
    with pytest.raises(RuntimeError, match="closed"):
        await database.read(lambda connection: None)


async def test_commits_queued_together_share_a_transaction_and_a_bad_one_fails_alone(tmp_path: Path) -> None:
    database = SqliteFile(str(tmp_path / "plain.db"))
    try:
        await database.write(lambda connection: connection.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)"))
        insert = "INSERT INTO t VALUES (:x)"
        # Submitted in one loop turn: the writer takes them as one round.
        good = [database.commit([(insert, [{"x": n}])]) for n in range(50)]
        bad = database.commit([(insert, [{"x": 7}])])  # a duplicate of one above
        results = await asyncio.gather(*good, bad, return_exceptions=True)
        assert results[:50] == [None] * 50
        assert isinstance(results[50], sqlite3.IntegrityError)
        rows = await database.read(lambda connection: connection.execute("SELECT count(*) FROM t").fetchall())
        assert rows == [(50,)]
        # A write of several statements lands whole or not at all.
        with pytest.raises(sqlite3.IntegrityError):
            await database.commit([(insert, [{"x": 100}]), (insert, [{"x": 1}])])
        rows = await database.read(
            lambda connection: connection.execute("SELECT count(*) FROM t WHERE x = 100").fetchall()
        )
        assert rows == [(0,)]
    finally:
        database.close()


def test_queued_commits_run_as_one_transaction_with_merged_statements(tmp_path: Path) -> None:
    connection = connect(str(tmp_path / "plain.db"))
    connection.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
    statements: list[str] = []
    connection.set_trace_callback(statements.append)
    loop = asyncio.new_event_loop()
    try:
        calls = [(loop.create_future(), GroupCommit([("INSERT INTO t VALUES (:x)", [{"x": n}])])) for n in range(200)]
        outcomes = _run_calls(connection, calls)  # type: ignore[arg-type]
    finally:
        loop.close()
    assert [error for _, _, error in outcomes] == [None] * 200
    assert statements.count("COMMIT") == 1
    assert connection.execute("SELECT count(*) FROM t").fetchone() == (200,)
    connection.close()


class _Gate:
    def __init__(self) -> None:
        self.open = False


def test_gated_commits_land_only_when_their_gate_is_open_when_the_writer_comes_to_them(tmp_path: Path) -> None:
    connection = connect(str(tmp_path / "plain.db"))
    connection.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
    statements: list[str] = []
    connection.set_trace_callback(statements.append)
    opened, shut, later = _Gate(), _Gate(), _Gate()

    def decide(_: sqlite3.Connection) -> None:  # e.g. an admission: runs first, sets its gate
        opened.open = True

    loop = asyncio.new_event_loop()
    try:
        insert = "INSERT INTO t VALUES (:x)"

        def write(x: int, gate: _Gate | None = None) -> tuple[asyncio.Future[object], GroupCommit]:
            return loop.create_future(), GroupCommit([(insert, [{"x": x}])], gate)

        calls = [(loop.create_future(), decide), write(1, opened), write(2), write(3, shut), write(4)]
        outcomes = _run_calls(connection, calls)  # type: ignore[arg-type]
        later.open = True  # decided in an earlier round (or outside the writer): read when the writer comes to it
        after = _run_calls(connection, [write(5, shut), write(6, later)])
    finally:
        loop.close()
    errors = [type(error).__name__ if error else None for _, _, error in outcomes + after]
    assert errors == [None, None, None, "GateClosed", None, "GateClosed", None]
    assert [row[0] for row in connection.execute("SELECT x FROM t ORDER BY x")] == [1, 2, 4, 6]
    assert statements.count("COMMIT") == 1  # 1, 2 and 4 in one transaction (6 alone: autocommit)
    connection.close()


async def test_checkpoints_follow_the_wal_growth_or_a_quiet_spell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The database file grows only when a checkpoint copies the WAL into it.
    monkeypatch.setattr("node.store.sqlite.CHECKPOINT_AFTER_WRITES", 50)
    monkeypatch.setattr("node.store.sqlite.CHECKPOINT_IDLE_S", 0.5)
    path = tmp_path / "node.db"
    store = SqliteFile(str(path))
    insert = "INSERT INTO t (b) VALUES (:b)"
    try:
        await store.write(lambda connection: connection.execute("CREATE TABLE t (a INTEGER PRIMARY KEY, b BLOB)"))
        deadline = time.monotonic() + 5
        while path.stat().st_size < 2 * 4096 and time.monotonic() < deadline:  # quiet: the table reaches the file
            await asyncio.sleep(0.05)
        empty = path.stat().st_size
        assert empty >= 2 * 4096
        for _ in range(40):  # steady writes, below the threshold: no checkpoint after each
            await store.commit([(insert, [{"b": b"x" * 4096}])])
            await asyncio.sleep(0.01)
        assert path.stat().st_size == empty
        for _ in range(200):  # past the threshold while still writing: checkpointed without a pause
            await store.commit([(insert, [{"b": b"x" * 4096}])])
            await asyncio.sleep(0.01)
            if path.stat().st_size > empty:
                break
        assert path.stat().st_size > empty + 40 * 4096
        grown = path.stat().st_size
        for _ in range(5):
            await store.commit([(insert, [{"b": b"y" * 4096}])])
        deadline = time.monotonic() + 5
        while path.stat().st_size == grown and time.monotonic() < deadline:  # a quiet spell checkpoints the rest
            await asyncio.sleep(0.1)
        assert path.stat().st_size > grown
    finally:
        store.close()
