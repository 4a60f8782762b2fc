"""Every store test runs on both stores: an SQLite file and a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from node.store.engine import create_engine, migrate
from node.store.server_jobs import ServerJobRepository
from tests.support.postgres import fresh_database


@pytest.fixture(params=["sqlite", "postgresql"])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'store' / 'node.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    async with fresh_database(server) as url:
        yield url


ServerNodes = Callable[..., ServerJobRepository]


@pytest.fixture
async def server_nodes(postgres_server: str) -> AsyncIterator[ServerNodes]:
    """server_nodes(owner, queue_size=None): a node's job repository with an engine of its own (its
    own connections, as a node process has), all on one fresh PostgreSQL database. It has no
    heartbeat (the lease `node:<owner>`): to other nodes it is gone until the test takes one."""
    closers = []
    async with fresh_database(postgres_server) as url:
        first = create_engine(url)
        await migrate(first)
        await first.dispose()

        def make(owner: str, queue_size: int | None = None) -> ServerJobRepository:
            engine = create_engine(url)
            repository = ServerJobRepository(engine, owner, queue_size)
            closers.append((repository, engine))
            return repository

        yield make
        for repository, engine in closers:
            await repository.close()
            await engine.dispose()
