"""Auth: API keys (hashes only), used signatures, per-minute counters, token budgets, usage records.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_keys",
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("workspace", sa.String(256), nullable=True),
        sa.Column("rpm", sa.BigInteger, nullable=True),
        sa.Column("tpm", sa.BigInteger, nullable=True),
        sa.Column("token_budget", sa.BigInteger, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=True),
        sa.Column("revoked_at", sa.Float, nullable=True),
    )
    op.create_table(
        "auth_signatures",
        sa.Column("signature", sa.String(128), primary_key=True),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index("ix_auth_signatures_expires_at", "auth_signatures", ["expires_at"])
    op.create_table(
        "auth_windows",
        sa.Column("caller", sa.String(320), primary_key=True),
        sa.Column("minute", sa.BigInteger, primary_key=True),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("tokens", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_auth_windows_minute", "auth_windows", ["minute"])
    op.create_table(
        "auth_budgets",
        sa.Column("caller", sa.String(320), primary_key=True),
        sa.Column("used", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "auth_usage",
        sa.Column("job_id", sa.String(256), primary_key=True),
        sa.Column("caller", sa.String(320), nullable=False),
        sa.Column("model", sa.String(256), nullable=True),
        sa.Column("prompt_tokens", sa.Integer, nullable=False),
        sa.Column("completion_tokens", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_auth_usage_caller_created", "auth_usage", ["caller", "created_at"])
    op.create_index("ix_auth_usage_created", "auth_usage", ["created_at"])


def downgrade() -> None:
    op.drop_table("auth_usage")
    op.drop_table("auth_budgets")
    op.drop_table("auth_windows")
    op.drop_table("auth_signatures")
    op.drop_table("auth_keys")
