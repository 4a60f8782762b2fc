"""Chain tables: accepted delegated subscriptions and delivery transactions.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "chain_delegated",
        sa.Column("owner", sa.String(42), primary_key=True),
        sa.Column("nonce", sa.BigInteger, primary_key=True),
        sa.Column("subscription", sa.Text, nullable=False),
        sa.Column("signature", sa.Text, nullable=False),
        sa.Column("data", sa.Text, nullable=True),
        sa.Column("signer", sa.String(42), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("subscription_id", sa.BigInteger, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_chain_delegated_status", "chain_delegated", ["status"])
    op.create_table(
        "chain_deliveries",
        sa.Column("sub_key", sa.String(96), primary_key=True),
        sa.Column("delivery_interval", sa.BigInteger, primary_key=True),
        sa.Column("subscription_id", sa.BigInteger, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("tx_hash", sa.String(66), nullable=True),
        sa.Column("tx_nonce", sa.BigInteger, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index("ix_chain_deliveries_status", "chain_deliveries", ["status"])


def downgrade() -> None:
    op.drop_table("chain_deliveries")
    op.drop_table("chain_delegated")
