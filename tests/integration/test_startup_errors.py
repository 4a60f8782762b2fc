"""A node that cannot use its database or its wallet key stops at start with one line saying why.

The real node process, against a real broken store each time: exit code, and the whole of stderr
(the node's own log lines go there too, so the test config logs warnings and above only).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import node_config, run_node_to_exit
from tests.support.requirements import unavailable

NODE_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"


def _config(tmp_path: Path, database: Path | str, **sections: Any) -> dict[str, Any]:
    config = node_config(tmp_path, [], **sections)
    config["store"] = {"url": f"sqlite+aiosqlite:///{database}"}
    config["log"] = {"path": str(tmp_path / "node.log"), "level": "WARNING"}
    return config


def _sqlite_file(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE kept (value TEXT)")
        connection.executemany("INSERT INTO kept VALUES (?)", [("x" * 500,)] * 100)
    connection.close()


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.splitlines()
    assert "Traceback" not in result.stderr and len(lines) == 1, result.stderr
    return lines[0]


def _without_dac_override() -> tuple[str, ...]:
    """Root ignores file modes: drop the capabilities that let it (a non-root user needs nothing)."""
    if os.geteuid() != 0:
        return ()
    prefix = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search")
    probe = subprocess.run([*prefix, "true"], capture_output=True)
    if probe.returncode != 0:
        unavailable(f"cannot drop CAP_DAC_OVERRIDE with setpriv: {probe.stderr.decode().strip()}")
    return prefix


def _not_sqlite(path: Path) -> None:
    path.write_text("name,value\nthis is a CSV file, not a database\n" * 20)


def _corrupt(path: Path) -> None:
    _sqlite_file(path)
    data = bytearray(path.read_bytes())
    data[100:4000] = b"\x5a" * 3900  # the schema page, past the 100-byte header
    path.write_bytes(bytes(data))


def _directory(path: Path) -> None:
    path.mkdir()
    (path / "inside").write_text("a directory holds this")


def _parent_is_a_file(path: Path) -> None:
    path.parent.write_text("a file where the database's directory should be")


@pytest.mark.parametrize(
    ("name", "database", "make", "problem"),
    [
        ("not sqlite", "node.db", _not_sqlite, "not an SQLite database (a different or corrupt file)"),
        ("corrupt", "node.db", _corrupt, "the database file is corrupt (database disk image is malformed)"),
        ("directory", "node.db", _directory, "is a directory, not a database file"),
        ("parent is a file", "data/node.db", _parent_is_a_file, "cannot create its directory {parent}: File exists"),
    ],
)
def test_an_unusable_database_stops_the_node_with_one_line(
    tmp_path: Path, name: str, database: str, make: Any, problem: str
) -> None:
    path = tmp_path / database
    make(path)
    before = path.read_bytes() if path.is_file() else None

    result = run_node_to_exit(_config(tmp_path, path), tmp_path)

    assert result.returncode == 1, result.stderr
    expected = problem.format(parent=path.parent)
    assert _one_line(result) == f"infernet-node: cannot start: store {path}: {expected}"
    if before is not None:
        assert path.read_bytes() == before  # never written to


def test_a_read_only_database_stops_the_node_with_one_line(tmp_path: Path) -> None:
    prefix = _without_dac_override()
    path = tmp_path / "node.db"
    _sqlite_file(path)
    path.chmod(0o444)
    before = path.read_bytes()

    result = run_node_to_exit(_config(tmp_path, path), tmp_path, prefix=prefix)

    assert result.returncode == 1, result.stderr
    assert _one_line(result) == (
        f"infernet-node: cannot start: store {path}: "
        "read-only: the node must be able to write to the file and to its directory"
    )
    assert path.read_bytes() == before


def _chain_config(tmp_path: Path, key: str | None) -> dict[str, Any]:
    wallet = {"private_key": key} if key is not None else {}
    chain = {"enabled": True, "rpc_url": "http://127.0.0.1:9", "registry_address": "0x" + "11" * 20, "wallet": wallet}
    return _config(tmp_path, tmp_path / "node.db", chain=chain)


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        (NODE_KEY[:-2], "expected 32 bytes as 64 hex digits, with or without 0x"),
        (NODE_KEY[:-1] + "g", "expected 32 bytes as 64 hex digits, with or without 0x"),
        ("0x" + "ff" * 32, "outside the range of secp256k1 keys"),
    ],
)
@pytest.mark.parametrize("source", ["file", "environment"])
def test_an_invalid_wallet_key_stops_the_node_with_one_line_and_never_shows_the_key(
    tmp_path: Path, key: str, problem: str, source: str
) -> None:
    in_file = source == "file"
    env = {} if in_file else {"INFERNET_WALLET_PRIVATE_KEY": key}

    result = run_node_to_exit(_chain_config(tmp_path, key if in_file else None), tmp_path, env=env)

    assert result.returncode == 2, result.stderr
    field = "chain.wallet.private_key" + ("" if in_file else " (from INFERNET_WALLET_PRIVATE_KEY)")
    assert _one_line(result) == (
        f"infernet-node: bad configuration: {tmp_path / 'config.json'}: {field}: not a private key: {problem}"
    )
    digits = key.removeprefix("0x")
    for text in (result.stdout, result.stderr):
        assert digits not in text and digits[8:24] not in text
    assert not (tmp_path / "node.db").exists()  # stopped before it touched anything
