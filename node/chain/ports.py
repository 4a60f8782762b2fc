"""What the chain module needs from a store: the port `node/store/chain_repository.py` implements.

The chain code depends on this Protocol only, so it can run on an in-memory fake in unit
tests, and `node/store` depends on `node/chain` (its records and this port), never the reverse.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from node.chain.records import DelegatedRecord, DelegatedStatus, DeliveryRecord, DeliveryStatus


class ChainRepository(Protocol):
    # -- delegated subscriptions ------------------------------------------------

    async def add_delegated(self, record: DelegatedRecord) -> bool:
        """Store a newly accepted delegated subscription; False if (owner, nonce) is already known."""
        ...

    async def get_delegated(self, owner: str, nonce: int) -> DelegatedRecord | None: ...

    async def open_delegated(self) -> list[DelegatedRecord]:
        """Those still to deliver (accepted or tracking), oldest first."""
        ...

    async def set_delegated(
        self,
        owner: str,
        nonce: int,
        status: DelegatedStatus,
        reason: str | None = None,
        subscription_id: int | None = None,
    ) -> None: ...

    # -- deliveries: one row per (subscription, interval) ------------------------

    async def get_delivery(self, sub_key: str, interval: int) -> DeliveryRecord | None: ...

    async def begin_delivery(self, sub_key: str, interval: int, subscription_id: int | None) -> DeliveryRecord:
        """Mark (sub_key, interval) as being worked on; returns the row (with earlier attempts).

        A row that is delivered, abandoned or sent is returned unchanged: the caller decides."""
        ...

    async def record_sent(self, sub_key: str, interval: int, tx_hash: str, tx_nonce: int) -> None:
        """Written once the transaction is signed and before it is handed to the chain."""
        ...

    async def finish_delivery(
        self,
        sub_key: str,
        interval: int,
        status: DeliveryStatus,
        reason: str | None = None,
        failed_attempt: bool = False,
        subscription_id: int | None = None,
    ) -> int:
        """Record how an attempt ended; returns the failed attempts so far."""
        ...

    async def open_deliveries(self) -> list[DeliveryRecord]:
        """Running or sent: what a node that takes over must finish or re-check."""
        ...

    async def deliveries(self, sub_keys: Sequence[str]) -> list[DeliveryRecord]: ...
