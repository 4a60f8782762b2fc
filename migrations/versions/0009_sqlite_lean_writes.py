"""SQLite: fewer b-trees written per /v1 call (partial job indexes, WITHOUT ROWID auth tables).

Every /v1 call inserts a job, then finishes it and records its usage, on the SQLite writer's
thread, which is on the request's path. Most of that CPU is b-tree upkeep:
- `ix_jobs_owner` only serves PostgreSQL's claims (node/store/server_jobs.py): on SQLite (one
  node) `owner` is NULL, so a partial index `WHERE owner IS NOT NULL` is never written to.
- `ix_jobs_finished_at` only serves the prune (`finished_at IS NOT NULL AND finished_at < x`):
  partial `WHERE finished_at IS NOT NULL`, a job enters it once, when it finishes.
- The auth tables are keyed by text: as rowid tables each row was written twice (the table and
  its primary key's index); WITHOUT ROWID tables are their primary key's b-tree, written once.
`ix_jobs_status` stays full: its queries bind the status, and SQLite only uses a partial index
whose WHERE the query's own literal terms imply. PostgreSQL is left as it is.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from migrations.sqlite_transaction import on_sqlite_in_one_transaction

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_PARTIAL = {
    "ix_jobs_owner": (["owner", "status"], "owner IS NOT NULL"),
    "ix_jobs_finished_at": (["finished_at"], "finished_at IS NOT NULL"),
}


def _auth_columns(table: str) -> list[sa.Column[Any]]:
    """0004's columns of a rebuilt table (new objects each call: a Column belongs to one table)."""
    if table == "auth_signatures":
        return [
            sa.Column("signature", sa.String(128), primary_key=True),
            sa.Column("expires_at", sa.Float, nullable=False),
        ]
    if table == "auth_windows":
        return [
            sa.Column("caller", sa.String(320), primary_key=True),
            sa.Column("minute", sa.BigInteger, primary_key=True),
            sa.Column("requests", sa.BigInteger, nullable=False),
            sa.Column("tokens", sa.BigInteger, nullable=False),
        ]
    if table == "auth_budgets":
        return [
            sa.Column("caller", sa.String(320), primary_key=True),
            sa.Column("used", sa.BigInteger, nullable=False),
        ]
    assert table == "auth_usage", table
    return [
        sa.Column("job_id", sa.String(256), primary_key=True),
        sa.Column("caller", sa.String(320), nullable=False),
        sa.Column("model", sa.String(256), nullable=True),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    ]


_AUTH_INDEXES: dict[str, list[tuple[str, list[str]]]] = {
    "auth_signatures": [("ix_auth_signatures_expires_at", ["expires_at"])],
    "auth_windows": [("ix_auth_windows_minute", ["minute"])],
    "auth_budgets": [],
    "auth_usage": [
        ("ix_auth_usage_caller_created", ["caller", "created_at"]),
        ("ix_auth_usage_created", ["created_at"]),
    ],
}


def _rebuild(table: str, with_rowid: bool) -> None:
    """SQLite's way to change a table's kind: a new table, the rows copied, the old one dropped,
    the new one renamed, its indexes (dropped with the old table) made again under their names."""
    columns = _auth_columns(table)
    names = ", ".join(column.name for column in columns)
    staging = f"{table}_0009"
    op.create_table(staging, *columns, sqlite_with_rowid=with_rowid)
    op.execute(f"INSERT INTO {staging} ({names}) SELECT {names} FROM {table}")
    op.drop_table(table)
    op.rename_table(staging, table)
    for index, indexed in _AUTH_INDEXES[table]:
        op.create_index(index, table, indexed)


def _jobs_indexes(partial: bool) -> None:
    for index, (indexed, where) in _PARTIAL.items():
        op.drop_index(index, table_name="jobs")
        op.create_index(index, "jobs", indexed, sqlite_where=sa.text(where) if partial else None)


def upgrade() -> None:
    if not on_sqlite_in_one_transaction():
        return
    _jobs_indexes(partial=True)
    for table in _AUTH_INDEXES:
        _rebuild(table, with_rowid=False)


def downgrade() -> None:
    if not on_sqlite_in_one_transaction():
        return
    for table in _AUTH_INDEXES:
        _rebuild(table, with_rowid=True)
    _jobs_indexes(partial=False)
