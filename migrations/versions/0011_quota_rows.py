"""One quota row per caller: `auth_windows` and `auth_budgets` become `auth_quotas`.

A limited /v1 call took its minute (an upsert on auth_windows) and its budget (one on
auth_budgets): two statements, so a BEGIN/COMMIT, and two b-trees written; settling updated
both again. One row per caller (its current minute's window and its budget's `used`) lets one
upsert take both and one UPDATE settle both (node/store/auth_sql.py). The window is overwritten
when the minute turns, so past minutes need no pruning (and no index on `minute`).

State carried over: each caller's latest window, and its budget's `used` (NULL for a caller
without a budget row). A caller with a budget but no window gets an empty window in minute 0,
which the next call turns. The downgrade maps back: windows from rows that counted a request,
budgets from rows with a `used`. Both dialects; on SQLite the table is WITHOUT ROWID (as 0009
made the auth tables) and the whole change is one transaction.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from migrations.sqlite_transaction import on_sqlite_in_one_transaction

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_CARRY_OVER = (
    "INSERT INTO auth_quotas (caller, minute, requests, tokens, used) "
    "SELECT callers.caller, COALESCE(w.minute, 0), COALESCE(w.requests, 0), COALESCE(w.tokens, 0), b.used "
    "FROM (SELECT caller FROM auth_windows UNION SELECT caller FROM auth_budgets) callers "
    "LEFT JOIN auth_windows w ON w.caller = callers.caller "
    "AND w.minute = (SELECT MAX(latest.minute) FROM auth_windows latest WHERE latest.caller = callers.caller) "
    "LEFT JOIN auth_budgets b ON b.caller = callers.caller"
)


def upgrade() -> None:
    on_sqlite = on_sqlite_in_one_transaction()
    op.create_table(
        "auth_quotas",
        sa.Column("caller", sa.String(320), primary_key=True),
        sa.Column("minute", sa.BigInteger, nullable=False),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("tokens", sa.BigInteger, nullable=False),
        sa.Column("used", sa.BigInteger, nullable=True),
        sqlite_with_rowid=not on_sqlite,
    )
    op.execute(_CARRY_OVER)
    op.drop_table("auth_budgets")
    op.drop_index("ix_auth_windows_minute", table_name="auth_windows")
    op.drop_table("auth_windows")


def downgrade() -> None:
    on_sqlite = on_sqlite_in_one_transaction()
    # 0010's shape: 0004's tables, WITHOUT ROWID on SQLite (0009).
    op.create_table(
        "auth_windows",
        sa.Column("caller", sa.String(320), primary_key=True),
        sa.Column("minute", sa.BigInteger, primary_key=True),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("tokens", sa.BigInteger, nullable=False),
        sqlite_with_rowid=not on_sqlite,
    )
    op.create_index("ix_auth_windows_minute", "auth_windows", ["minute"])
    op.create_table(
        "auth_budgets",
        sa.Column("caller", sa.String(320), primary_key=True),
        sa.Column("used", sa.BigInteger, nullable=False),
        sqlite_with_rowid=not on_sqlite,
    )
    # A row that never counted a request is a budget's alone (an old window always held one).
    op.execute(
        "INSERT INTO auth_windows (caller, minute, requests, tokens) "
        "SELECT caller, minute, requests, tokens FROM auth_quotas WHERE requests > 0"
    )
    op.execute("INSERT INTO auth_budgets (caller, used) SELECT caller, used FROM auth_quotas WHERE used IS NOT NULL")
    op.drop_table("auth_quotas")
