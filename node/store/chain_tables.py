"""Tables of the chain module (migration 0002), on the same MetaData as the jobs table."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Index, Integer, String, Table, Text

from node.store.tables import metadata

# Delegated subscriptions accepted over REST, kept until delivered or given up.
chain_delegated = Table(
    "chain_delegated",
    metadata,
    Column("owner", String(42), primary_key=True),  # lower-case 0x address
    Column("nonce", BigInteger, primary_key=True),
    Column("subscription", Text, nullable=False),  # JSON: the wire `subscription` object
    Column("signature", Text, nullable=False),  # JSON: nonce, expiry, v, r, s (r, s up to 2**256)
    Column("data", Text, nullable=True),  # JSON: the off-chain input
    Column("signer", String(42), nullable=False),  # recovered EIP-712 signer
    Column("status", String(16), nullable=False),
    Column("reason", Text, nullable=True),
    Column("subscription_id", BigInteger, nullable=True),  # once known on chain
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_chain_delegated_status", "status"),
)

# One row per (subscription, interval) the node worked on: its transaction and attempts.
chain_deliveries = Table(
    "chain_deliveries",
    metadata,
    Column("sub_key", String(96), primary_key=True),  # "sub:<id>" or "del:<owner>:<nonce>"
    Column("delivery_interval", BigInteger, primary_key=True),
    Column("subscription_id", BigInteger, nullable=True),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),  # failed attempts so far
    Column("tx_hash", String(66), nullable=True),
    Column("tx_nonce", BigInteger, nullable=True),
    Column("reason", Text, nullable=True),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_chain_deliveries_status", "status"),
)
