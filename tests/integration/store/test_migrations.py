"""Migrations upgrade a store that already holds jobs (SQLite file and PostgreSQL)."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import text

from node.api import wire
from node.store.batcher import WriteBatcher
from node.store.engine import MIGRATIONS_DIR, create_engine, migrate
from node.store.repository import SqlJobRepository
from tests.support.postgres import fresh_database


def _upgrade_to(revision: str) -> Any:
    def upgrade(sync_connection: Any) -> None:
        config = AlembicConfig()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = sync_connection
        command.upgrade(config, revision)

    return upgrade


async def test_0003_adds_model_call_columns_to_a_store_with_jobs(store_url: str) -> None:
    engine = create_engine(store_url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade_to("0002"))
            await connection.execute(text(
                "INSERT INTO jobs (client_ip, id, origin, status, containers, data, requires_proof, result,"
                " created_at, updated_at, finished_at) VALUES ('1.1.1.1', 'old', 'offchain', 'success', '[\"a\"]',"
                " '{}', false, '{\"container\": \"a\", \"output\": 1}', 1.0, 2.0, 2.0)"
            ))
        await migrate(engine)
        batcher = WriteBatcher(engine)
        batcher.start()
        try:
            [old] = await SqlJobRepository(engine, batcher).get_many("1.1.1.1", ["old"])
        finally:
            await batcher.close()
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
