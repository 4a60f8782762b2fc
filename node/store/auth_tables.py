"""Tables of the auth domain (migrations 0004 and 0011), on the same MetaData as the jobs table.

On SQLite all but `auth_keys` are WITHOUT ROWID (migration 0009): keyed by text, each is its
primary key's b-tree alone, so a row written is one b-tree written, not two."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Index, Integer, String, Table

from node.store.tables import metadata

# API keys: only the SHA-256 of the secret is kept. Revoked keys stay (their name too).
auth_keys = Table(
    "auth_keys",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("workspace", String(256), nullable=True),
    Column("rpm", BigInteger, nullable=True),
    Column("tpm", BigInteger, nullable=True),
    Column("token_budget", BigInteger, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=True),
    Column("revoked_at", Float, nullable=True),
)

# Signatures accepted once each, kept until their timestamp is stale (then pruned).
auth_signatures = Table(
    "auth_signatures",
    metadata,
    Column("signature", String(128), primary_key=True),  # hex of r‖s
    Column("expires_at", Float, nullable=False),
    Index("ix_auth_signatures_expires_at", "expires_at"),
    sqlite_with_rowid=False,
)

# One row per limited caller (migration 0011): its current one-minute window (requests and tokens
# counted in `minute`) and, for callers with a token budget, the tokens used in total (`used`, NULL
# until then). Admission takes both in one upsert; the window is overwritten when the minute turns.
auth_quotas = Table(
    "auth_quotas",
    metadata,
    Column("caller", String(320), primary_key=True),
    Column("minute", BigInteger, nullable=False),
    Column("requests", BigInteger, nullable=False),
    Column("tokens", BigInteger, nullable=False),
    Column("used", BigInteger, nullable=True),
    sqlite_with_rowid=False,
)

# One row per call: who made it, which model, how many tokens. Kept forever.
auth_usage = Table(
    "auth_usage",
    metadata,
    Column("job_id", String(256), primary_key=True),
    Column("caller", String(320), nullable=False),
    Column("model", String(256), nullable=True),
    Column("prompt_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_auth_usage_caller_created", "caller", "created_at"),
    Index("ix_auth_usage_created", "created_at"),
    sqlite_with_rowid=False,
)
