"""Fill a SQLite store with N finished jobs, fast, on the node's own schema.

The schema comes from the node's Alembic migrations; the rows are written with the
stdlib's executemany in one transaction, shaped as the node writes them
(node/store/jobs_sql.py `to_row`). Ids are random UUIDs, inserted in key order
(the B-tree is denser than after random inserts; lookups stay random).

Run: python bench/seed.py PATH N [--client-ip 127.0.0.1] [--sample FILE --sample-size K]
"""

from __future__ import annotations

import argparse
import json
import random
import sqlite3
import time
from pathlib import Path

from sqlalchemy import create_engine

from node.store.engine import _upgrade

ROW_BATCH = 50_000


def job_ids(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    ids = []
    for _ in range(count):
        h = f"{rng.getrandbits(128):032x}"
        ids.append(f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}")
    ids.sort()
    return ids


def create_schema(path: Path) -> None:
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        _upgrade(connection)
    engine.dispose()


def seed(path: Path, count: int, client_ip: str = "127.0.0.1", seed: int = 1) -> list[str]:
    """Create the store at `path` holding `count` finished jobs; return their ids."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    create_schema(path)
    ids = job_ids(count, seed)
    containers = json.dumps(["hello-world"], separators=(",", ":"))
    data = json.dumps({"prompt": "hello"}, separators=(",", ":"))
    result = json.dumps({"container": "hello-world", "output": {"prompt": "hello"}}, separators=(",", ":"))
    base = time.time() - count / 1000.0
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=OFF")  # a failed seed is simply redone
    connection.execute("PRAGMA synchronous=OFF")
    connection.execute("PRAGMA cache_size=-200000")
    connection.execute("BEGIN")
    # Secondary indexes are built once after the rows, not row by row (same SQL, from the schema).
    indexes = connection.execute(
        "SELECT name, sql FROM sqlite_master WHERE type='index' AND tbl_name='jobs' AND sql IS NOT NULL"
    ).fetchall()
    for name, _ in indexes:
        connection.execute(f'DROP INDEX "{name}"')
    insert = (
        "INSERT INTO jobs (client_ip, id, origin, status, containers, data, requires_proof, result,"
        " intermediate, created_at, updated_at, finished_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
    )
    for start in range(0, count, ROW_BATCH):
        rows = []
        for index in range(start, min(count, start + ROW_BATCH)):
            created = base + index / 1000.0
            rows.append(
                (
                    client_ip,
                    ids[index],
                    "offchain",
                    "success",
                    containers,
                    data,
                    0,
                    result,
                    None,
                    created,
                    created + 0.0005,
                    created + 0.0005,
                )
            )
        connection.executemany(insert, rows)
    for _, sql in indexes:
        connection.execute(sql)
    connection.execute("COMMIT")
    connection.execute("PRAGMA journal_mode=WAL")  # as the node leaves it
    connection.close()
    return ids


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("path", type=Path)
    parser.add_argument("count", type=int)
    parser.add_argument("--client-ip", default="127.0.0.1")
    parser.add_argument("--sample", type=Path)
    parser.add_argument("--sample-size", type=int, default=20_000)
    args = parser.parse_args()
    started = time.perf_counter()
    ids = seed(args.path, args.count, args.client_ip)
    print(f"seeded {args.count} jobs in {time.perf_counter() - started:.1f}s")
    if args.sample:
        args.sample.write_text("\n".join(random.Random(2).sample(ids, min(args.sample_size, len(ids)))) + "\n")


if __name__ == "__main__":
    main()
