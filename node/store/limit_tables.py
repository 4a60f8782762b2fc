"""Limits that hold across the nodes of one store (migration 0007). Used on PostgreSQL only:
a single node on SQLite keeps them in its own memory, where they are exact already."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, String, Table

from node.store.tables import metadata

# How many jobs are pending (queued or running, run by a node: offchain, stream, model) in the
# whole store, under `scope` "*". Triggers on `jobs` keep it equal to the count of those rows
# in the transaction that changes them (migration 0007; once per statement since 0008); an
# insert locks the row and checks it against `jobs.queue_size` (server_jobs.py).
job_slots = Table(
    "job_slots",
    metadata,
    Column("scope", String(200), primary_key=True),
    Column("used", BigInteger, nullable=False),
)

# Requests per client IP and route in one fixed window of `server.rate_limit.period` seconds
# (window_index = floor(time / period)); old windows are pruned (server_rate_limit.py).
rate_windows = Table(
    "rate_windows",
    metadata,
    Column("client_ip", String(64), primary_key=True),
    Column("route", String(256), primary_key=True),
    Column("window_index", BigInteger, primary_key=True),
    Column("requests", Integer, nullable=False),
)
