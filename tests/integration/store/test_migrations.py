"""Migrations upgrade a store that already holds jobs (SQLite file and PostgreSQL)."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import text

from node.api import wire
from node.store.engine import MIGRATIONS_DIR, create_engine, migrate
from node.store.repositories import auth_repository, job_repository
from tests.support.postgres import fresh_database


def _migrate_to(revision: str, down: bool = False) -> Any:
    """For `connection.run_sync`: Alembic up (or down) to `revision` on that connection."""

    def migrate_to(sync_connection: Any) -> None:
        config = AlembicConfig()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = sync_connection
        (command.downgrade if down else command.upgrade)(config, revision)

    return migrate_to


PG_INDEXES = (
    "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' "
    "AND tablename <> 'alembic_version' ORDER BY indexname"
)


async def pg_indexes_unchanged(server: str, before: str, after: str) -> list[Any]:
    """Migrate a fresh PostgreSQL database to `before`, up to `after` and back, asserting that its
    indexes stay as they were (a SQLite-only migration); returns them."""
    async with fresh_database(server) as url:
        engine = create_engine(url)
        try:
            async with engine.begin() as connection:
                await connection.run_sync(_migrate_to(before))
                indexes = (await connection.execute(text(PG_INDEXES))).all()
                await connection.run_sync(_migrate_to(after))
                assert (await connection.execute(text(PG_INDEXES))).all() == indexes
                await connection.run_sync(_migrate_to(before, down=True))
                assert (await connection.execute(text(PG_INDEXES))).all() == indexes
                version = await connection.execute(text("SELECT version_num FROM alembic_version"))
                assert version.scalar_one() == before
        finally:
            await engine.dispose()
    return list(indexes)


async def test_0003_adds_model_call_columns_to_a_store_with_jobs(store_url: str) -> None:
    engine = create_engine(store_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_migrate_to("0002"))
            await connection.execute(
                text(
                    "INSERT INTO jobs (client_ip, id, origin, status, containers, data, requires_proof, result,"
                    " created_at, updated_at, finished_at) VALUES ('1.1.1.1', 'old', 'offchain', 'success', '[\"a\"]',"
                    ' \'{}\', false, \'{"container": "a", "output": 1}\', 1.0, 2.0, 2.0)'
                )
            )
        await migrate(engine)
        repository = job_repository(engine, "node-test")
        try:
            [old] = await repository.get_many("1.1.1.1", ["old"])
        finally:
            await repository.close()
        assert old.model is None and old.usage is None
        assert wire.job_result(old) == {"id": "old", "status": "success", "result": {"container": "a", "output": 1}}
    finally:
        await engine.dispose()


async def test_nodes_started_at_once_on_a_fresh_postgresql_store_migrate_it_in_turn(postgres_server: str) -> None:
    # Three nodes of a cluster started together (compose, a script): without turns, they created
    # the same tables at once and two of them failed to start. (SQLite is one node's store.)
    async with fresh_database(postgres_server) as url:
        await _migrate_at_once(url)


async def _migrate_at_once(url: str) -> None:
    engines = [create_engine(url) for _ in range(3)]
    try:
        # Bounded: without turns they could also wait on each other's locks for good.
        await asyncio.wait_for(asyncio.gather(*(migrate(engine) for engine in engines)), 30)
        async with engines[0].connect() as connection:
            versions = (await connection.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
        assert len(versions) == 1
    finally:
        for engine in engines:
            await engine.dispose()


_KINDS = [("offchain", "queued"), ("model", "running"), ("chain", "queued"), ("stream", "success")] * 2
# One statement for all of them: a statement trigger sees them together.
_JOBS = (
    "INSERT INTO jobs (client_ip, id, origin, status, containers, data, requires_proof, created_at, updated_at) "
    "VALUES "
    + ", ".join(
        f"('1.1.1.1', :prefix || '{n}', '{origin}', '{status}', '[\"a\"]', '{{}}', false, 1.0, 1.0)"
        for n, (origin, status) in enumerate(_KINDS)
    )
)
_PENDING = (
    "SELECT count(*) FROM jobs WHERE status IN ('queued', 'running') AND origin IN ('offchain', 'stream', 'model')"
)


async def _slots_agree(connection: Any) -> None:
    used = (await connection.execute(text("SELECT used FROM job_slots WHERE scope = '*'"))).scalar_one()
    assert used == (await connection.execute(text(_PENDING))).scalar_one()


async def test_0008_counts_pending_jobs_per_statement_and_goes_back_to_0007(postgres_server: str) -> None:
    # 0008 swaps 0007's row trigger for statement triggers: the shared queue bound reads this count,
    # so it must agree with the jobs table whichever way the schema went.
    async with fresh_database(postgres_server) as url:
        engine = create_engine(url)
        try:
            await migrate(engine)
            for turn, step in enumerate(("0008", "0007", "0008")):
                prefix = {"prefix": f"{turn}-"}
                async with engine.begin() as connection:
                    if step == "0007":
                        await connection.run_sync(_migrate_to("0007", down=True))
                    elif turn:
                        await connection.run_sync(_migrate_to("0008"))
                    await connection.execute(text(_JOBS), prefix)
                    await _slots_agree(connection)
                    # One of the two queued offchain jobs ends, one of the two running model calls goes.
                    ended = "UPDATE jobs SET status = 'success' WHERE id = :prefix || '0'"
                    await connection.execute(text(ended), prefix)
                    await _slots_agree(connection)
                    await connection.execute(text("DELETE FROM jobs WHERE id = :prefix || '1'"), prefix)
                    await _slots_agree(connection)
            async with engine.connect() as connection:
                # Two a turn: chain jobs are not counted.
                assert (await connection.execute(text(_PENDING))).scalar_one() == 6
                await _slots_agree(connection)
        finally:
            await engine.dispose()


async def test_0012_a_job_names_its_caller_and_going_back_moves_its_usage_to_auth_usage(store_url: str) -> None:
    engine = create_engine(store_url)
    try:
        await migrate(engine)
        async with engine.begin() as connection:
            await connection.execute(
                text(
                    "INSERT INTO jobs (client_ip, id, origin, status, containers, data, requires_proof, created_at,"
                    " updated_at, finished_at, model, prompt_tokens, completion_tokens, caller) VALUES"
                    " ('1.1.1.1', 'billed', 'model', 'success', '[\"llm\"]', '{}', false, 1.0, 2.0, 2.0, 'smol',"
                    " 3, 4, 'key:a'),"
                    " ('1.1.1.1', 'failed', 'model', 'failed', '[\"llm\"]', '{}', false, 1.0, 5.0, 5.0, 'smol',"
                    " NULL, NULL, 'key:a'),"
                    " ('1.1.1.1', 'plain', 'offchain', 'success', '[\"a\"]', '{}', false, 1.0, 2.0, 2.0,"
                    " NULL, NULL, NULL, NULL)"
                )
            )
            await connection.execute(
                text(
                    "INSERT INTO auth_usage VALUES ('older', 'key:a', 'smol', 1, 1, 0.5)"  # pruned before
                )
            )
        before = await auth_repository(engine).usage(None, None)
        assert [(t.caller, t.calls, t.prompt_tokens, t.completion_tokens) for t in before] == [("key:a", 3, 4, 5)]
        async with engine.begin() as connection:
            await connection.run_sync(_migrate_to("-1", down=True))
        async with engine.connect() as connection:
            moved = (await connection.execute(text("SELECT * FROM auth_usage ORDER BY job_id"))).all()
            assert [tuple(row) for row in moved] == [
                ("billed", "key:a", "smol", 3, 4, 2.0),
                ("failed", "key:a", "smol", 0, 0, 5.0),
                ("older", "key:a", "smol", 1, 1, 0.5),
            ]
            columns = (await connection.execute(text("SELECT * FROM jobs LIMIT 1"))).keys()
            assert "caller" not in columns
        await migrate(engine)  # up again: the records stay where the downgrade put them, counted once
        after = await auth_repository(engine).usage(None, None)
        assert after == before
    finally:
        await engine.dispose()
