"""A model call's usage record is its job row: `jobs.caller`, moved to `auth_usage` when pruned.

Until now every /v1 call wrote a row of its own into `auth_usage` (job id, caller, model, tokens)
in the same commit as its job's outcome, which already holds the model and the tokens. On SQLite
that row was four more pages in the WAL per call (its table and two indexes), as many as the
outcome itself. Now the outcome's UPDATE also names the caller, so the job row is the usage
record; `auth_usage` keeps the records of jobs that are pruned (the prune moves them in the same
transaction as it deletes the jobs, node/store/jobs_sql.py) and those written before this
migration. Usage totals read both (node/store/auth_sql.py). Nothing is moved here: a job finished
before the upgrade has its row in `auth_usage` already and no caller.

Downgrade moves the usage of every job with a caller into `auth_usage` first, so that the older
node, which reads `auth_usage` alone, sees every call.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations.sqlite_transaction import on_sqlite_in_one_transaction

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_MOVE_ALL = (
    "INSERT INTO auth_usage (job_id, caller, model, prompt_tokens, completion_tokens, created_at) "
    "SELECT id, caller, model, COALESCE(prompt_tokens, 0), COALESCE(completion_tokens, 0), "
    "COALESCE(finished_at, updated_at) FROM jobs WHERE caller IS NOT NULL ON CONFLICT (job_id) DO NOTHING"
)


def upgrade() -> None:
    on_sqlite_in_one_transaction()
    # Nullable, no index: only a finished model call has one; the usage totals (an operator's
    # CLI) scan for it rather than every outcome writing one more index.
    op.add_column("jobs", sa.Column("caller", sa.String(320), nullable=True))


def downgrade() -> None:
    on_sqlite_in_one_transaction()
    op.execute(_MOVE_ALL)
    # Plain ALTER TABLE on both (SQLite >= 3.35): a batch copy of the table would rebuild its indexes.
    op.execute("ALTER TABLE jobs DROP COLUMN caller")
