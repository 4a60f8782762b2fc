"""A real PostgreSQL server for the tests (scripts/postgres.sh), and one fresh database per test.

The server is shared by the whole run; each test gets a database of its own, so tests never see
each other's rows and need no cleanup beyond dropping it.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.support.processes import ROOT
from tests.support.requirements import unavailable

SCRIPT = ROOT / "scripts" / "postgres.sh"


def start_server() -> str:
    """Start the test server (idempotent) and return its admin URL, or skip/fail when it can't run."""
    try:
        done = subprocess.run([str(SCRIPT), "start"], capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        unavailable(f"scripts/postgres.sh did not run: {error}")
    if done.returncode != 0:
        unavailable(f"scripts/postgres.sh start failed: {done.stderr.strip()[-500:]}")
    return done.stdout.strip().splitlines()[-1]


def _with_database(url: str, database: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + database


async def _admin(url: str, statement: str) -> None:
    import asyncpg  # only the PostgreSQL tests need it

    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def drop_connections(server_url: str, url: str) -> None:
    """The server ends every session of `url`'s database (as a restart or a failover would)."""
    name = url.rsplit("/", 1)[1]
    await _admin(
        server_url,
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()",
    )


@asynccontextmanager
async def fresh_database(server_url: str) -> AsyncIterator[str]:
    """A new, empty database on the server; its SQLAlchemy URL; dropped afterwards."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    await _admin(server_url, f'CREATE DATABASE "{name}"')
    try:
        yield _with_database(server_url, name)
    finally:
        # FORCE: a node killed mid-test may leave its connections behind for a moment.
        await _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def create_database_sync(server_url: str) -> str:
    """A new database for a test that runs a node process; the caller drops it (drop_database_sync)."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    asyncio.run(_admin(server_url, f'CREATE DATABASE "{name}"'))
    return _with_database(server_url, name)


def drop_database_sync(server_url: str, url: str) -> None:
    name = url.rsplit("/", 1)[1]
    asyncio.run(_admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    yield start_server()


@pytest.fixture(params=["sqlite", "postgresql"])
def node_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """`store.url` for a node process: an SQLite file under tmp_path, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'node.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    url = create_database_sync(server)
    try:
        yield url
    finally:
        drop_database_sync(server, url)
