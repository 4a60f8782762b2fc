"""The count of pending jobs (`job_slots`, 0007) kept once per statement, not once per row.

0007's row trigger ran a PL/pgSQL function and an UPDATE of the one `job_slots` row for every
job inserted, finished or deleted. The group commit writes a batch's jobs in one statement
(node/store/one_statement.py), so statement triggers over the transition tables count the
whole batch in one UPDATE: the same count, in the same transaction, at a fraction of the
server's work per job (bench/README.md). SQLite has no such trigger (one node).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_PENDING = "status IN ('queued', 'running') AND origin IN ('offchain', 'stream', 'model')"

# One function for the three events: the pending rows a statement added less those it took away.
_COUNT_FUNCTION = f"""
CREATE FUNCTION jobs_count_pending_rows() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    delta bigint := 0;
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        delta := delta + (SELECT count(*) FROM new_rows WHERE {_PENDING});
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        delta := delta - (SELECT count(*) FROM old_rows WHERE {_PENDING});
    END IF;
    IF delta <> 0 THEN
        UPDATE job_slots SET used = used + delta WHERE scope = '*';
    END IF;
    RETURN NULL;
END
$$
"""

# Transition tables forbid a column list: the UPDATE trigger runs for every UPDATE of jobs.
_TRIGGERS = (
    "CREATE TRIGGER jobs_count_inserted AFTER INSERT ON jobs REFERENCING NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION jobs_count_pending_rows()",
    "CREATE TRIGGER jobs_count_updated AFTER UPDATE ON jobs REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION jobs_count_pending_rows()",
    "CREATE TRIGGER jobs_count_deleted AFTER DELETE ON jobs REFERENCING OLD TABLE AS old_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION jobs_count_pending_rows()",
)


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    # In the migration's transaction: no write lands between the two triggers, none is counted twice.
    op.execute("DROP TRIGGER jobs_count_pending ON jobs")
    op.execute("DROP FUNCTION jobs_count_pending()")
    op.execute(_COUNT_FUNCTION)
    for trigger in _TRIGGERS:
        op.execute(trigger)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in ("jobs_count_inserted", "jobs_count_updated", "jobs_count_deleted"):
        op.execute(f"DROP TRIGGER {name} ON jobs")
    op.execute("DROP FUNCTION jobs_count_pending_rows()")
    from importlib import import_module

    shared_limits = import_module("migrations.versions.0007_shared_limits")
    op.execute(shared_limits._COUNT_FUNCTION)
    op.execute(
        "CREATE TRIGGER jobs_count_pending AFTER INSERT OR DELETE OR UPDATE OF status, origin ON jobs "
        "FOR EACH ROW EXECUTE FUNCTION jobs_count_pending()"
    )
