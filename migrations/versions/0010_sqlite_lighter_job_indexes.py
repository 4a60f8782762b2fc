"""SQLite: two job indexes a job's FINISH no longer rewrites.

A /v1 call's FINISH UPDATE sets `status` (with finished_at, result, tokens) on the SQLite writer's
thread. Every index holding `status` is rewritten by it (an entry deleted, one inserted):
- `ix_jobs_client_status` (client_ip, status, created_at) becomes `ix_jobs_client_created`
  (client_ip, created_at): its one reader, `JobStore.list_ids`, finds a client's jobs in
  creation order with it and checks the status on the row.
- `ix_jobs_status` becomes partial, pending jobs only, so a FINISH only deletes its entry. Its
  readers (`JobStore.recover`) compare the status to literals: SQLite uses a partial index only
  when a term of the query's WHERE is one of the index's OR terms word for word (hence `OR`, not
  `IN`); a bound status matches only when SQLite re-prepares the statement with its value, a
  literal at the first prepare.
PostgreSQL is left as it is (its claims read `status` through other indexes and it has no
single writer thread to spare).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations.sqlite_transaction import on_sqlite_in_one_transaction

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

PENDING_ONLY = "status = 'queued' OR status = 'running'"


def upgrade() -> None:
    if not on_sqlite_in_one_transaction():
        return
    op.drop_index("ix_jobs_client_status", table_name="jobs")
    op.create_index("ix_jobs_client_created", "jobs", ["client_ip", "created_at"])
    op.drop_index("ix_jobs_status", table_name="jobs")
    op.create_index("ix_jobs_status", "jobs", ["status"], sqlite_where=sa.text(PENDING_ONLY))


def downgrade() -> None:
    if not on_sqlite_in_one_transaction():
        return
    op.drop_index("ix_jobs_status", table_name="jobs")
    op.create_index("ix_jobs_status", "jobs", ["status"])
    op.drop_index("ix_jobs_client_created", table_name="jobs")
    op.create_index("ix_jobs_client_status", "jobs", ["client_ip", "status", "created_at"])
