"""node.leases.LeaseStore on the SQL store: one atomic statement per acquire, the same SQL on SQLite and PostgreSQL.

No advisory locks: a pooling proxy (pgbouncer in transaction mode) in front of PostgreSQL
would silently break them. The row itself is the lock; `INSERT … ON CONFLICT DO UPDATE …
WHERE` takes it only when it is free, expired, or ours, and `RETURNING` says whether it did.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import and_, delete, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from node.leases import LeaseInfo
from node.store.lease_tables import leases

# SQLite needs 3.35 for RETURNING. A renewal keeps the time the holder first took it.
_ACQUIRE = text(
    "INSERT INTO leases (name, holder, acquired_at, renewed_at, expires_at) "
    "VALUES (:name, :holder, :now, :now, :expires_at) "
    "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, "
    "acquired_at = CASE WHEN leases.holder = excluded.holder THEN leases.acquired_at ELSE excluded.acquired_at END, "
    "renewed_at = excluded.renewed_at, expires_at = excluded.expires_at "
    "WHERE leases.expires_at < :now OR leases.holder = :holder "
    "RETURNING holder"
)


class SqlLeaseStore:
    def __init__(self, engine: AsyncEngine, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock

    async def acquire(self, name: str, holder: str, ttl: float) -> bool:
        now = self._clock()
        params = {"name": name, "holder": holder, "now": now, "expires_at": now + ttl}
        async with self._engine.begin() as connection:
            row = (await connection.execute(_ACQUIRE, params)).first()
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
