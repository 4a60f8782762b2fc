"""Job claims: the node that owns a pending job, and until when (several nodes on one store).

A node renews `lease_until` of the jobs it owns while it lives; a job whose lease ran out
belongs to a dead node and is claimed by another (node/jobs/claims.py). Pending jobs
written before this migration get an expired lease, so the first node to start takes
them over, as a restart recovers them today.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("owner", sa.String(128), nullable=True))
    op.add_column("jobs", sa.Column("lease_until", sa.Float, nullable=True))
    op.create_index("ix_jobs_owner", "jobs", ["owner", "status"])
    op.execute(
        "UPDATE jobs SET owner = 'before-upgrade', lease_until = 0 "
        "WHERE status IN ('queued', 'running') AND origin IN ('offchain', 'stream', 'model')"
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_owner", table_name="jobs")
    op.drop_column("jobs", "lease_until")
    op.drop_column("jobs", "owner")
