"""node.leases.LeaseStore on the SQL store: one atomic statement per acquire, on SQLite and PostgreSQL.

No advisory locks: a pooling proxy (pgbouncer in transaction mode) in front of PostgreSQL
would silently break them. The row itself is the lock; `INSERT … ON CONFLICT DO UPDATE …
WHERE` takes it only when it is free, expired, or ours, and `RETURNING` says whether it did.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import and_, case, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from node.leases import LeaseInfo
from node.store.lease_tables import leases


class SqlLeaseStore:
    def __init__(self, engine: AsyncEngine, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock
        # Both dialects spell the upsert the same way; SQLite needs 3.35 for RETURNING.
        self._insert: Any = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    async def acquire(self, name: str, holder: str, ttl: float) -> bool:
        now = self._clock()
        statement = self._insert(leases).values(
            name=name, holder=holder, acquired_at=now, renewed_at=now, expires_at=now + ttl
        )
        statement = statement.on_conflict_do_update(
            index_elements=[leases.c.name],
            set_={
                "holder": statement.excluded.holder,
                # A renewal keeps the time the holder first took it.
                "acquired_at": case(
                    (leases.c.holder == statement.excluded.holder, leases.c.acquired_at),
                    else_=statement.excluded.acquired_at,
                ),
                "renewed_at": statement.excluded.renewed_at,
                "expires_at": statement.excluded.expires_at,
            },
            where=(leases.c.expires_at < now) | (leases.c.holder == holder),
        ).returning(leases.c.holder)
        async with self._engine.begin() as connection:
            row = (await connection.execute(statement)).first()
        return row is not None and row.holder == holder

    async def release(self, name: str, holder: str) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(delete(leases).where(and_(leases.c.name == name, leases.c.holder == holder)))

    async def live(self, prefix: str) -> list[LeaseInfo]:
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = (
            select(leases)
            .where(and_(leases.c.name.like(escaped + "%", escape="\\"), leases.c.expires_at >= self._clock()))
            .order_by(leases.c.name)
        )
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [LeaseInfo(row.name, row.holder, row.acquired_at, row.expires_at) for row in rows]

