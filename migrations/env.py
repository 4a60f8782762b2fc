"""Alembic environment. The node runs migrations on a connection it passes in
(`config.attributes["connection"]`); the alembic CLI works too, given a URL."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

import node.store.auth_tables
import node.store.chain_tables
import node.store.limit_tables  # noqa: F401  (each registers its tables on `metadata`)
from node.store.tables import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    # CLI use: a sync URL, e.g. `alembic -x url=sqlite:///data/node.db upgrade head`.
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("alembic: give the database URL with -x url=... (or sqlalchemy.url in alembic.ini)")
    engine = create_engine(url)
    with engine.begin() as sync_connection:
        _run(sync_connection)
