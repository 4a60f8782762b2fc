"""Shared limits: the job queue's bound and the per-IP rate limit, across the nodes of one store.

`job_slots` counts the pending jobs that count against `jobs.queue_size` (queued or running,
run by a node: offchain, stream, model). On PostgreSQL a trigger keeps the count in the same
transaction as every change to `jobs` (accept, finish, claim, recovery, prune, a status report
that replaces a job), so it never drifts, whichever node or path wrote; a node accepting jobs
locks the row and checks the bound (node/store/server_jobs.py). `rate_windows` holds the
per-IP request counters (node/store/server_rate_limit.py). SQLite (one node) keeps both limits
in memory; the tables exist there too, empty.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_PENDING = "status IN ('queued', 'running') AND origin IN ('offchain', 'stream', 'model')"

_COUNT_FUNCTION = """
CREATE FUNCTION jobs_count_pending() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    delta integer := 0;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        IF OLD.status IN ('queued', 'running') AND OLD.origin IN ('offchain', 'stream', 'model') THEN
            delta := delta - 1;
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        IF NEW.status IN ('queued', 'running') AND NEW.origin IN ('offchain', 'stream', 'model') THEN
            delta := delta + 1;
        END IF;
    END IF;
    IF delta <> 0 THEN
        UPDATE job_slots SET used = used + delta WHERE scope = '*';
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "job_slots",
        sa.Column("scope", sa.String(200), primary_key=True),
        sa.Column("used", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "rate_windows",
        sa.Column("client_ip", sa.String(64), primary_key=True),
        sa.Column("route", sa.String(256), primary_key=True),
        sa.Column("window_index", sa.BigInteger, primary_key=True),
        sa.Column("requests", sa.Integer, nullable=False),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"INSERT INTO job_slots (scope, used) SELECT '*', count(*) FROM jobs WHERE {_PENDING}")
        op.execute(_COUNT_FUNCTION)
        op.execute(
            "CREATE TRIGGER jobs_count_pending AFTER INSERT OR DELETE OR UPDATE OF status, origin ON jobs "
            "FOR EACH ROW EXECUTE FUNCTION jobs_count_pending()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER jobs_count_pending ON jobs")
        op.execute("DROP FUNCTION jobs_count_pending()")
    op.drop_table("rate_windows")
    op.drop_table("job_slots")
