"""The job repository on a SQL server (PostgreSQL), which several nodes may share.

SQLAlchemy async (asyncpg); concurrent writes share one transaction through the group-commit
batcher (batcher.py). Every pending job this node writes carries its id (`owner`); it stays the
node's while the node's heartbeat (the lease `node:<id>`, node/cluster.py) is live, so keeping
a backlog costs nothing per job. The jobs of a node whose heartbeat ran out are claimed by the
others (node/jobs/claims.py). A node's writes to a pending job hold only while it owns the job,
so that a node that lost a job (its heartbeat ran out, another took it) cannot overwrite it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, bindparam, insert, literal, or_, select, text, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine

from node.cluster import NODE_PREFIX
from node.jobs.errors import StoreUnavailable
from node.jobs.model import Job, JobOrigin, JobStatus
from node.jobs.ports import Claimed, Gate
from node.store.batcher import WriteBatcher
from node.store.faults import read_failed
from node.store.jobs_sql import (
    BY_IDS_CHUNK,
    COLUMNS,
    FINISH_VALUES,
    KEY,
    OWNED,
    PENDING,
    JobStore,
    failed_row,
    from_row,
    to_row,
    upsert,
)
from node.store.lease_tables import leases
from node.store.limit_tables import job_slots
from node.store.server_writer import as_sqlalchemy
from node.store.tables import jobs

_INSERT_OWNED = insert(jobs).values({name: bindparam(name) for name in (*COLUMNS[:15], "owner")})
_OWNED_BY = and_(KEY, jobs.c.owner == bindparam("k_owner"))
_MARK_RUNNING_OWNED = update(jobs).where(_OWNED_BY).values(status=bindparam("status"), updated_at=bindparam("now"))
_FINISH_OWNED = update(jobs).where(_OWNED_BY).values({**FINISH_VALUES, "owner": None})
_UPSERT = upsert(postgresql.insert)
_BY_IDS = f"SELECT {', '.join(COLUMNS[:15])} FROM jobs WHERE client_ip = $1 AND id = ANY($2::varchar[])"
_LOCK_SLOTS = select(job_slots.c.used).where(job_slots.c.scope == "*").with_for_update()


# The owner of the queued jobs a clean stop gave up: no node has this id (nor the heartbeat
# `node:`), so they are claimed as a dead node's are, found by the same scan (a NULL owner would
# need a scan of its own, among every finished job).
RELEASED = ""

# The owners of pending jobs that have no live heartbeat. Only jobs in flight have an owner
# (finishing clears it), and the distinct owners are read by a loose scan of ix_jobs_owner: one
# index probe per owner, so a beat costs the same with ten pending jobs as with a million.
_GONE = text(
    """
WITH RECURSIVE owners(owner) AS (
    (SELECT owner FROM jobs WHERE owner IS NOT NULL ORDER BY owner LIMIT 1)
    UNION ALL
    SELECT (SELECT j.owner FROM jobs j WHERE j.owner > o.owner ORDER BY j.owner LIMIT 1)
    FROM owners o WHERE o.owner IS NOT NULL
)
SELECT owner FROM owners WHERE owner IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM leases WHERE leases.name = :prefix || owners.owner AND leases.expires_at >= :now
)
"""
)


class ServerJobRepository(JobStore):
    """`owner` is this node's id: every pending job it writes carries it.

    With `queue_size`, the pending jobs of every node on the store number at most that many: the
    group commit that stores new jobs first locks the store's count of pending jobs (`job_slots`,
    kept by triggers, migrations 0007 and 0008) and stores only as many as fit. One statement per commit,
    exact under concurrency (the row lock orders the nodes' commits); a job refused is Overloaded.
    """

    _insert = _INSERT_OWNED
    _mark_running = _MARK_RUNNING_OWNED
    _finish = _FINISH_OWNED
    _upsert = _UPSERT

    def __init__(self, engine: AsyncEngine, owner: str, queue_size: int | None = None) -> None:
        super().__init__(engine)
        self.owner = owner
        self._queue_size = queue_size
        self._room = (
            None
            if queue_size is None
            else select(literal(queue_size) - job_slots.c.used).where(job_slots.c.scope == "*").with_for_update()
        )
        # Each batch of these four in one statement (server_writer.py), rows named by their key;
        # new jobs first, so that the bound is locked before any row.
        keyed = ("k_ip", "k_id")
        joined = {_INSERT_OWNED: ("client_ip", "id"), _UPSERT: ("client_ip", "id"), _MARK_RUNNING_OWNED: keyed}
        self._batcher = WriteBatcher(engine, joined={**joined, _FINISH_OWNED: keyed})
        self._batcher.start()

    async def close(self) -> None:
        await self._batcher.close()

    async def _commit(self, statement: Any, rows: list[dict[str, Any]], gate: Gate | None = None) -> int:
        assert gate is None, "JobStore.add waits for the gate here (_gates_in_order is False)"
        if statement is _INSERT_OWNED and self._room is not None:  # new jobs: as many as the shared bound admits
            return await self._batcher.write_within(statement, rows, self._room)
        await self._batcher.write(statement, rows)
        return len(rows)

    def _rows(self, new_jobs: Sequence[Job]) -> list[dict[str, Any]]:
        rows = [to_row(job) for job in new_jobs]
        for row, job in zip(rows, new_jobs, strict=True):
            owned = job.origin.value in OWNED and not job.status.finished
            row["owner"] = self.owner if owned else None
        return rows

    def _keyed(self, row: dict[str, Any]) -> dict[str, Any]:
        row["k_owner"] = self.owner
        return row

    async def get_many(self, client_ip: str, ids: Sequence[str]) -> list[Job]:
        # On asyncpg directly, as the writer writes (server_writer.py): one round trip where
        # SQLAlchemy's connection makes three (BEGIN, SELECT, ROLLBACK).
        try:
            async with self._engine.connect() as connection:
                try:
                    driver = (await connection.get_raw_connection()).driver_connection
                    assert driver is not None
                    rows = await driver.fetch(_BY_IDS, client_ip, list(ids))
                except Exception as error:
                    failure = read_failed(as_sqlalchemy(error, _BY_IDS))
                    if isinstance(failure, StoreUnavailable):
                        # SQLAlchemy does not see this error: drop the pool's connections as it would.
                        await connection.invalidate()
                        self._engine.sync_engine.pool.dispose()
                    raise failure from error
        except StoreUnavailable:
            raise
        except Exception as error:  # the checkout itself (the server is down)
            raise read_failed(error) from error
        return [from_row(row) for row in rows]

    # -- claims (node/jobs/ports.JobClaims) ------------------------------------

    async def owned(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Of `keys`, the pending jobs this node still owns."""
        found: set[tuple[str, str]] = set()
        keys = list(keys)
        for start in range(0, len(keys), BY_IDS_CHUNK):
            chunk = keys[start : start + BY_IDS_CHUNK]
            query = select(jobs.c.client_ip, jobs.c.id).where(
                jobs.c.owner == self.owner,
                jobs.c.status.in_(PENDING),
                or_(*(and_(jobs.c.client_ip == ip, jobs.c.id == job_id) for ip, job_id in chunk)),
            )
            async with self._engine.connect() as connection:
                found.update((row.client_ip, row.id) for row in (await connection.execute(query)).all())
        return found

    async def release_queued(self) -> int:
        """Give this node's queued jobs up now (to the owner RELEASED), so that other nodes claim them at once."""
        statement = (
            update(jobs)
            .where(jobs.c.owner == self.owner, jobs.c.status == JobStatus.QUEUED.value)
            .values(owner=RELEASED)
        )
        async with self._engine.begin() as connection:
            return (await connection.execute(statement)).rowcount or 0

    async def claim(
        self, room: int, retryable: frozenset[str], restart_reason: str | None = None, batch: int = 500
    ) -> Claimed:
        """Take over the pending jobs of dead nodes (no live heartbeat) and released ones, at most `batch` rows.

        Rows are locked with FOR UPDATE SKIP LOCKED, so two nodes claiming at once never
        take the same job. Queued jobs become this node's, up to `room` of them. Running
        ones were interrupted: they are failed, or queued again here when every container
        of their chain is in `retryable`. With `restart_reason` (at start), the jobs this
        node's id still owns from before a restart are taken too, failed with that reason.
        """
        now = time.time()
        async with self._engine.connect() as connection:
            gone = [row.owner for row in await connection.execute(_GONE, {"prefix": NODE_PREFIX, "now": now})]
        owners = [owner for owner in gone if owner != self.owner]
        if not owners and restart_reason is None:
            return Claimed()  # the usual beat: one read, no lock
        taken: list[Job] = []
        failures: list[dict[str, Any]] = []
        rerun = 0
        async with self._engine.begin() as connection:
            # The count of pending jobs first, as every commit of new jobs takes it before their rows:
            # failing a job updates it (the trigger), and taking it after the rows this locks would
            # let a node that commits new jobs and writes one of those rows wait on us as we wait on it.
            await connection.execute(_LOCK_SLOTS)
            if owners:
                owners = await self._still_gone(connection, owners, now)
            if restart_reason is not None:
                owners.append(self.owner)
            if not owners:
                return Claimed()
            query = (
                select(jobs)
                .where(jobs.c.status.in_(PENDING), jobs.c.origin.in_(OWNED), jobs.c.owner.in_(owners))
                .order_by(jobs.c.created_at)
                .limit(batch)
                .with_for_update(skip_locked=True)
            )
            for row in (await connection.execute(query)).all():
                job = from_row(row)
                runnable = job.origin is JobOrigin.OFFCHAIN and (
                    job.status is JobStatus.QUEUED or all(name in retryable for name in job.containers)
                )
                if runnable:
                    if len(taken) >= room:
                        continue  # stays its dead owner's: claimed when there is room
                    if job.status is JobStatus.RUNNING:
                        rerun += 1
                    job.status = JobStatus.QUEUED
                    taken.append(job)
                    continue
                if restart_reason is not None and row.owner == self.owner:
                    reason = restart_reason
                elif row.owner == RELEASED:  # only queued jobs are released: not expected
                    reason = "the node running the job stopped"
                else:
                    reason = f"node {row.owner} died while the job was running"
                failure = failed_row(job.client_ip, job.id, job.containers[0], reason, now)
                failures.append(failure)
            if taken:
                await connection.execute(
                    update(jobs).where(KEY).values(status=JobStatus.QUEUED.value, owner=self.owner, updated_at=now),
                    [{"k_ip": job.client_ip, "k_id": job.id} for job in taken],
                )
            if failures:  # rows this transaction locked: no owner condition needed
                await connection.execute(update(jobs).where(KEY).values({**FINISH_VALUES, "owner": None}), failures)
        return Claimed(taken, len(failures), rerun)

    async def _still_gone(self, connection: Any, owners: list[str], now: float) -> list[str]:
        """Lock the heartbeats of `owners` and keep those still not live.

        A node that comes back renews its heartbeat after this claim commits (the row lock),
        so its renewal counts as taken again after a lapse and it drops what it lost before
        starting anything; an owner whose heartbeat came back meanwhile keeps its jobs.
        """
        names = [NODE_PREFIX + owner for owner in owners]
        query = select(leases.c.name, leases.c.expires_at).where(leases.c.name.in_(names)).with_for_update()
        live = {row.name for row in await connection.execute(query) if row.expires_at >= now}
        return [owner for owner, name in zip(owners, names, strict=True) if name not in live]
