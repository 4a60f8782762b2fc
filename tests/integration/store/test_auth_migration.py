"""Migration 0004 (auth tables) on both stores, and one head for the whole chain of revisions."""

from __future__ import annotations

from alembic.config import Config as AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from node.store.engine import MIGRATIONS_DIR, open_store


def test_the_revisions_form_one_chain_with_a_single_head() -> None:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    script = ScriptDirectory.from_config(config)
    assert len(script.get_heads()) == 1, script.get_heads()
    assert len(script.get_bases()) == 1, script.get_bases()


async def test_the_auth_tables_exist_after_migrating(store_url: str) -> None:
    engine = await open_store(store_url)
    try:
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
            unique = await connection.run_sync(lambda sync: inspect(sync).get_unique_constraints("auth_keys"))
    finally:
        await engine.dispose()
    assert {"auth_keys", "auth_signatures", "auth_quotas", "auth_usage"} <= tables
    assert not {"auth_windows", "auth_budgets"} & tables  # one quota row per caller since 0011
    assert [constraint["column_names"] for constraint in unique] == [["key_hash"]]
