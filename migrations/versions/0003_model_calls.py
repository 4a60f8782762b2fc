"""Model calls (/v1): the model asked for and the tokens it used, on the jobs table.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable: jobs other than model calls have none of these. batch_alter_table so
    # SQLite (which cannot ALTER much) and PostgreSQL take the same migration.
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("model", sa.String(256), nullable=True))
        batch.add_column(sa.Column("prompt_tokens", sa.Integer, nullable=True))
        batch.add_column(sa.Column("completion_tokens", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("completion_tokens")
        batch.drop_column("prompt_tokens")
        batch.drop_column("model")
