"""The real `infernet-node keys …` and `infernet-node usage` commands, on SQLite and PostgreSQL
(node_store_url): migrations first, secrets printed once and stored only as hashes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.store.engine import create_engine
from tests.support.usage_records import Call, finished_calls

CLI = str(Path(sys.executable).parent / "infernet-node")


def run(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, *args, "--config", str(workdir / "config.json")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def workdir(tmp_path: Path, node_store_url: str) -> Path:
    (tmp_path / "config.json").write_text(json.dumps({"store": {"url": node_store_url}}))
    return tmp_path


async def _stored(url: str) -> list[tuple[str, ...]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            from sqlalchemy import text

            rows = await connection.execute(text("SELECT name, key_hash, workspace FROM auth_keys ORDER BY name"))
            return [tuple(row) for row in rows]
    finally:
        await engine.dispose()


def test_keys_create_list_revoke(workdir: Path, node_store_url: str) -> None:
    made = run(
        workdir,
        "keys",
        "create",
        "--name",
        "alice",
        "--workspace",
        "ws-1",
        "--rpm",
        "10",
        "--tpm",
        "1000",
        "--token-budget",
        "50000",
        "--expires",
        "2099-01-31",
    )
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert len(secret.splitlines()) == 1 and len(secret) > 40
    assert "shown once" in made.stderr
    # Only the hash is stored.
    assert asyncio.run(_stored(node_store_url)) == [("alice", hashlib.sha256(secret.encode()).hexdigest(), "ws-1")]

    assert run(workdir, "keys", "create", "--name", "bob").returncode == 0
    again = run(workdir, "keys", "create", "--name", "alice")
    assert again.returncode == 1 and "exists already" in again.stderr

    listed = run(workdir, "keys", "list")
    assert listed.returncode == 0
    assert secret not in listed.stdout and hashlib.sha256(secret.encode()).hexdigest() not in listed.stdout
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:4] == ["NAME", "STATE", "WORKSPACE", "RPM"]
    assert lines[1].split()[:7] == ["alice", "active", "ws-1", "10", "1000", "50000", "0"]
    assert lines[1].split()[-1] == "2099-01-31T00:00:00Z"
    assert lines[2].split()[:3] == ["bob", "active", "-"]

    revoked = run(workdir, "keys", "revoke", "alice")
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    assert run(workdir, "keys", "list").stdout.splitlines()[1].split()[:2] == ["alice", "revoked"]
    missing = run(workdir, "keys", "revoke", "alice")
    assert missing.returncode == 1 and "no active key named 'alice'" in missing.stderr


def test_bad_arguments_are_named(workdir: Path) -> None:
    for args, expected in (
        (["keys", "create", "--name", "x", "--rpm", "0"], "--rpm: 0 must be at least 1"),
        (["keys", "create", "--name", "x", "--expires", "soon"], "--expires: 'soon' is not a date"),
        (["keys", "create", "--name", "x", "--expires", "2001-01-01"], "--expires: 2001-01-01 is in the past"),
        (["keys", "create", "--name", "bad name!"], "--name"),
        (["usage", "--since", "yesterday"], "--since: 'yesterday' is not a date"),
    ):
        done = run(workdir, *args)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert expected in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr


def test_a_bad_store_url_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"store": {"url": "mysql://x"}}))
    done = run(tmp_path, "keys", "list")
    assert done.returncode == 2 and "store.url" in done.stderr and "Traceback" not in done.stderr


def test_an_unusable_store_is_named_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "store.db").mkdir()
    (tmp_path / "config.json").write_text(json.dumps({"store": {"url": f"sqlite+aiosqlite:///{tmp_path}/store.db"}}))
    done = run(tmp_path, "keys", "list")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == f"infernet-node: store {tmp_path}/store.db: is a directory, not a database file"


async def _record(url: str, calls: list[Call]) -> None:
    async with finished_calls(url, calls):
        pass


def test_usage_totals_per_caller_and_model(workdir: Path, node_store_url: str) -> None:
    assert run(workdir, "usage").stdout.strip() == "no usage recorded"  # migrations ran on an empty store
    assert run(workdir, "keys", "create", "--name", "alice").returncode == 0
    old = time.time() - 10 * 86400
    asyncio.run(
        _record(
            node_store_url,
            [
                ("j1", "key:alice", "smollm", 10, 5, time.time()),
                ("j2", "key:alice", "smollm", 1, 2, time.time()),
                ("j3", "key:alice", "other", 3, 3, old),
                ("j4", "gonka:gonka1xyz", "smollm", 7, 0, time.time()),
            ],
        )
    )
    everything = run(workdir, "usage")
    assert everything.returncode == 0, everything.stderr
    by_model, by_caller = everything.stdout.split("\n\n")
    assert [line.split() for line in by_model.splitlines()[1:]] == [
        ["gonka:gonka1xyz", "smollm", "1", "7", "0", "7"],
        ["key:alice", "other", "1", "3", "3", "6"],
        ["key:alice", "smollm", "2", "11", "7", "18"],
    ]
    assert [line.split() for line in by_caller.splitlines()[1:]] == [
        ["gonka:gonka1xyz", "1", "7"],
        ["key:alice", "3", "24"],
    ]
    recent = run(workdir, "usage", "--key", "alice", "--since", time.strftime("%Y-%m-%d", time.gmtime(old + 86400)))
    assert [line.split() for line in recent.stdout.split("\n\n")[0].splitlines()[1:]] == [
        ["key:alice", "smollm", "2", "11", "7", "18"],
    ]
    # keys list shows what a key used.
    assert run(workdir, "keys", "list").stdout.splitlines()[1].split()[6] == "24"
