"""The leases table (migration 0005), on the same MetaData as the jobs table."""

from __future__ import annotations

from sqlalchemy import Column, Float, String, Table

from node.store.tables import metadata

# One row per lease: the chain sender of a wallet ("chain:<address>"), a node's heartbeat ("node:<id>").
leases = Table(
    "leases",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("acquired_at", Float, nullable=False),  # when this holder took it
    Column("renewed_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)
