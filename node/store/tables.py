"""Table definitions. Alembic migrations in `migrations/` create and upgrade them."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Float, Index, Integer, MetaData, String, Table, Text, text

metadata = MetaData()

jobs = Table(
    "jobs",
    metadata,
    # Jobs are keyed by (client IP, job id): another client never sees them.
    Column("client_ip", String(64), primary_key=True),
    Column("id", String(256), primary_key=True),
    Column("origin", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("containers", Text, nullable=False),  # JSON list
    Column("data", Text, nullable=True),  # JSON
    Column("requires_proof", Boolean, nullable=False, default=False),
    Column("result", Text, nullable=True),  # JSON ContainerResult
    Column("intermediate", Text, nullable=True),  # JSON list of ContainerResult
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("finished_at", Float, nullable=True),
    # Model calls (/v1) only (migration 0003): the model asked for, and the tokens it counted.
    Column("model", String(256), nullable=True),
    Column("prompt_tokens", Integer, nullable=True),
    Column("completion_tokens", Integer, nullable=True),
    # Several nodes on one PostgreSQL (migration 0006): the node that owns a pending job, while
    # that node's heartbeat lives (node/jobs/claims.py). `lease_until`, the per-job lease the
    # owners renewed before, is no longer written. Both unused (NULL) on SQLite.
    Column("owner", String(128), nullable=True),
    Column("lease_until", Float, nullable=True),
    # A finished model call's caller (migration 0012; "key:<name>", "gonka:<address>", "ip:<address>"):
    # with `model` and the tokens, the call's usage record, moved to `auth_usage` when the job is pruned.
    Column("caller", String(320), nullable=True),
    # On SQLite (migration 0010) partial, pending jobs only: a FINISH deletes its entry. Its readers
    # compare `status` to literals, which SQLite matches to the index's WHERE (jobs_sql.status_is).
    Index("ix_jobs_status", "status", sqlite_where=text("status = 'queued' OR status = 'running'")),
    # A client's jobs in creation order (list_ids). On SQLite (migration 0010) without `status`, so
    # a FINISH does not rewrite it; PostgreSQL's migrations keep 0001's (client_ip, status, created_at).
    Index("ix_jobs_client_created", "client_ip", "created_at").ddl_if(dialect="sqlite"),
    Index("ix_jobs_client_status", "client_ip", "status", "created_at").ddl_if(dialect="postgresql"),
    # On SQLite (migration 0009) partial: a job enters it when it finishes (the prune's only use).
    Index("ix_jobs_finished_at", "finished_at", sqlite_where=text("finished_at IS NOT NULL")),
    # On SQLite (migration 0009) partial: `owner` is NULL there, so this index is never written.
    Index("ix_jobs_owner", "owner", "status", sqlite_where=text("owner IS NOT NULL")),
)
