"""Which repositories serve a store: on an SQLite file the single-node ones with the hot-path
threads, on a SQL server (PostgreSQL) the ones that several nodes may share."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from node.store.auth_sql import AuthStore
from node.store.jobs_sql import JobStore
from node.store.server_auth import ServerAuthRepository
from node.store.server_jobs import ServerJobRepository
from node.store.sqlite_auth import SqliteAuthRepository
from node.store.sqlite_jobs import SqliteJobRepository


def on_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def job_repository(engine: AsyncEngine, node_id: str, queue_size: int | None = None) -> JobStore:
    """On a server store, every pending job is owned by `node_id` while its heartbeat lives,
    and `queue_size` bounds the pending jobs of all the nodes together. On SQLite (one node) the
    job queue's own bound is exact."""
    if on_sqlite(engine):
        return SqliteJobRepository(engine)
    return ServerJobRepository(engine, node_id, queue_size)


def auth_repository(engine: AsyncEngine, clock: Callable[[], float] = time.time) -> AuthStore:
    return SqliteAuthRepository(engine, clock) if on_sqlite(engine) else ServerAuthRepository(engine, clock)
