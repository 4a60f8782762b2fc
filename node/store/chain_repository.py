"""The chain module's store: delegated subscriptions and delivery transactions (SQLAlchemy Core).

Writes are few (a handful per delivery), so they go straight to the engine in
their own short transactions; every write is committed before the caller goes on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import and_, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from node.chain.records import (
    DelegatedRecord,
    DelegatedStatus,
    DeliveryRecord,
    DeliveryStatus,
)
from node.store.chain_tables import chain_delegated, chain_deliveries

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_OPEN_DELEGATED = [status.value for status in DelegatedStatus if status.open]
_OPEN_DELIVERIES = [status.value for status in DeliveryStatus if status.open]


def _delegated(row: Any) -> DelegatedRecord:
    return DelegatedRecord(
        owner=row.owner,
        nonce=int(row.nonce),
        subscription=json.loads(row.subscription),
        signature=json.loads(row.signature),
        data=json.loads(row.data) if row.data is not None else None,
        signer=row.signer,
        status=DelegatedStatus(row.status),
        reason=row.reason,
        subscription_id=int(row.subscription_id) if row.subscription_id is not None else None,
        created_at=row.created_at,
    )


def _delivery(row: Any) -> DeliveryRecord:
    return DeliveryRecord(
        sub_key=row.sub_key,
        interval=int(row.delivery_interval),
        subscription_id=int(row.subscription_id) if row.subscription_id is not None else None,
        status=DeliveryStatus(row.status),
        attempts=int(row.attempts),
        tx_hash=row.tx_hash,
        tx_nonce=int(row.tx_nonce) if row.tx_nonce is not None else None,
        reason=row.reason,
    )


def _key(sub_key: str, interval: int) -> Any:
    return and_(chain_deliveries.c.sub_key == sub_key, chain_deliveries.c.delivery_interval == interval)


class SqlChainRepository:
    def __init__(self, engine: AsyncEngine, clock: Callable[[], float] = time.time) -> None:
        self._engine = engine
        self._clock = clock

    # -- delegated subscriptions ------------------------------------------------

    async def add_delegated(self, record: DelegatedRecord) -> bool:
        """Store a newly accepted delegated subscription; False if (owner, nonce) is already known."""
        now = self._clock()
        record.created_at = now
        values = {
            "owner": record.owner.lower(),
            "nonce": record.nonce,
            "subscription": _dumps(record.subscription),
            "signature": _dumps(record.signature),
            "data": _dumps(record.data),
            "signer": record.signer,
            "status": record.status.value,
            "reason": record.reason,
            "subscription_id": record.subscription_id,
            "created_at": now,
            "updated_at": now,
        }
        try:
            async with self._engine.begin() as connection:
                await connection.execute(insert(chain_delegated).values(**values))
        except IntegrityError:
            return False
        return True

    async def get_delegated(self, owner: str, nonce: int) -> DelegatedRecord | None:
        query = select(chain_delegated).where(
            and_(chain_delegated.c.owner == owner.lower(), chain_delegated.c.nonce == nonce)
        )
        async with self._engine.connect() as connection:
            row = (await connection.execute(query)).first()
        return _delegated(row) if row is not None else None

    async def open_delegated(self) -> list[DelegatedRecord]:
        query = (
            select(chain_delegated)
            .where(chain_delegated.c.status.in_(_OPEN_DELEGATED))
            .order_by(chain_delegated.c.created_at)
        )
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [_delegated(row) for row in rows]

    async def set_delegated(
        self,
        owner: str,
        nonce: int,
        status: DelegatedStatus,
        reason: str | None = None,
        subscription_id: int | None = None,
    ) -> None:
        values: dict[str, Any] = {"status": status.value, "updated_at": self._clock()}
        if reason is not None:
            values["reason"] = reason
        if subscription_id is not None:
            values["subscription_id"] = subscription_id
        async with self._engine.begin() as connection:
            await connection.execute(
                update(chain_delegated)
                .where(and_(chain_delegated.c.owner == owner.lower(), chain_delegated.c.nonce == nonce))
                .values(**values)
            )

    # -- deliveries -------------------------------------------------------------

    async def get_delivery(self, sub_key: str, interval: int) -> DeliveryRecord | None:
        async with self._engine.connect() as connection:
            row = (await connection.execute(select(chain_deliveries).where(_key(sub_key, interval)))).first()
        return _delivery(row) if row is not None else None

    async def begin_delivery(self, sub_key: str, interval: int, subscription_id: int | None) -> DeliveryRecord:
        """Mark (sub_key, interval) as being worked on; returns the row (with earlier attempts)."""
        now = self._clock()
        async with self._engine.begin() as connection:
            row = (await connection.execute(select(chain_deliveries).where(_key(sub_key, interval)))).first()
            if row is None:
                await connection.execute(
                    insert(chain_deliveries).values(
                        sub_key=sub_key,
                        delivery_interval=interval,
                        subscription_id=subscription_id,
                        status=DeliveryStatus.RUNNING.value,
                        attempts=0,
                        created_at=now,
                        updated_at=now,
                    )
                )
                return DeliveryRecord(sub_key, interval, subscription_id, DeliveryStatus.RUNNING, 0)
            record = _delivery(row)
            if record.status in (DeliveryStatus.DELIVERED, DeliveryStatus.ABANDONED, DeliveryStatus.SENT):
                return record  # finished, or a transaction is out: the caller decides
            values: dict[str, Any] = {"status": DeliveryStatus.RUNNING.value, "updated_at": now}
            if subscription_id is not None:
                values["subscription_id"] = subscription_id
            await connection.execute(update(chain_deliveries).where(_key(sub_key, interval)).values(**values))
            record.status = DeliveryStatus.RUNNING
            return record

    async def record_sent(self, sub_key: str, interval: int, tx_hash: str, tx_nonce: int) -> None:
        async with self._engine.begin() as connection:
            await connection.execute(
                update(chain_deliveries)
                .where(_key(sub_key, interval))
                .values(
                    status=DeliveryStatus.SENT.value,
                    tx_hash=tx_hash,
                    tx_nonce=tx_nonce,
                    updated_at=self._clock(),
                )
            )

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
        async with self._engine.begin() as connection:
            row = (await connection.execute(select(chain_deliveries).where(_key(sub_key, interval)))).first()
            attempts = (int(row.attempts) if row is not None else 0) + (1 if failed_attempt else 0)
            values: dict[str, Any] = {
                "status": status.value,
                "attempts": attempts,
                "reason": reason,
                "updated_at": self._clock(),
            }
            if subscription_id is not None:
                values["subscription_id"] = subscription_id
            if row is None:
                await connection.execute(
                    insert(chain_deliveries).values(
                        sub_key=sub_key, delivery_interval=interval, created_at=self._clock(), **values
                    )
                )
            else:
                await connection.execute(update(chain_deliveries).where(_key(sub_key, interval)).values(**values))
        return attempts

    async def open_deliveries(self) -> list[DeliveryRecord]:
        query = select(chain_deliveries).where(chain_deliveries.c.status.in_(_OPEN_DELIVERIES))
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [_delivery(row) for row in rows]

    async def deliveries(self, sub_keys: Sequence[str]) -> list[DeliveryRecord]:
        query = select(chain_deliveries).where(chain_deliveries.c.sub_key.in_(list(sub_keys)))
        async with self._engine.connect() as connection:
            rows = (await connection.execute(query)).all()
        return [_delivery(row) for row in rows]
