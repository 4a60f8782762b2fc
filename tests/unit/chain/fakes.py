"""In-memory implementations of the chain's ports, for unit tests of the leader logic.

They follow the contracts of node.leases.LeaseStore and node.chain.ports.ChainRepository;
the store tests (tests/integration/store/test_leases.py, tests/e2e/chain/test_store.py) hold
the SQL implementations to the same behaviour.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from node.chain.records import DelegatedRecord, DelegatedStatus, DeliveryRecord, DeliveryStatus
from node.leases import LeaseInfo


class InMemoryLeaseStore:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.rows: dict[str, LeaseInfo] = {}
        self.fail = False  # True: every call raises, as an unreachable database would

    def _check(self) -> None:
        if self.fail:
            raise ConnectionError("store unreachable")

    async def acquire(self, name: str, holder: str, ttl: float) -> bool:
        self._check()
        now = self._clock()
        row = self.rows.get(name)
        if row is None or row.expires_at < now or row.holder == holder:
            acquired_at = row.acquired_at if row is not None and row.holder == holder else now
            self.rows[name] = LeaseInfo(name, holder, acquired_at, now + ttl)
            return True
        return False

    async def release(self, name: str, holder: str) -> None:
        self._check()
        if name in self.rows and self.rows[name].holder == holder:
            del self.rows[name]

    async def live(self, prefix: str) -> list[LeaseInfo]:
        self._check()
        now = self._clock()
        return sorted(
            (row for row in self.rows.values() if row.name.startswith(prefix) and row.expires_at >= now),
            key=lambda row: row.name,
        )


class InMemoryChainRepository:
    def __init__(self) -> None:
        self.delegated: dict[tuple[str, int], DelegatedRecord] = {}
        self.rows: dict[tuple[str, int], DeliveryRecord] = {}

    async def add_delegated(self, record: DelegatedRecord) -> bool:
        key = (record.owner.lower(), record.nonce)
        if key in self.delegated:
            return False
        self.delegated[key] = dataclasses.replace(record)
        return True

    async def get_delegated(self, owner: str, nonce: int) -> DelegatedRecord | None:
        return self.delegated.get((owner.lower(), nonce))

    async def open_delegated(self) -> list[DelegatedRecord]:
        return [record for record in self.delegated.values() if record.status.open]

    async def set_delegated(
        self,
        owner: str,
        nonce: int,
        status: DelegatedStatus,
        reason: str | None = None,
        subscription_id: int | None = None,
    ) -> None:
        record = self.delegated[(owner.lower(), nonce)]
        record.status = status
        record.reason = reason if reason is not None else record.reason
        record.subscription_id = subscription_id if subscription_id is not None else record.subscription_id

    async def get_delivery(self, sub_key: str, interval: int) -> DeliveryRecord | None:
        row = self.rows.get((sub_key, interval))
        return dataclasses.replace(row) if row is not None else None

    async def begin_delivery(self, sub_key: str, interval: int, subscription_id: int | None) -> DeliveryRecord:
        row = self.rows.get((sub_key, interval))
        if row is None:
            row = DeliveryRecord(sub_key, interval, subscription_id, DeliveryStatus.RUNNING, 0)
            self.rows[(sub_key, interval)] = row
            return dataclasses.replace(row)
        if row.status in (DeliveryStatus.DELIVERED, DeliveryStatus.ABANDONED, DeliveryStatus.SENT):
            return dataclasses.replace(row)
        row.status = DeliveryStatus.RUNNING
        row.subscription_id = subscription_id if subscription_id is not None else row.subscription_id
        return dataclasses.replace(row)

    async def record_sent(self, sub_key: str, interval: int, tx_hash: str, tx_nonce: int) -> None:
        row = self.rows[(sub_key, interval)]
        row.status, row.tx_hash, row.tx_nonce = DeliveryStatus.SENT, tx_hash, tx_nonce

    async def finish_delivery(
        self,
        sub_key: str,
        interval: int,
        status: DeliveryStatus,
        reason: str | None = None,
        failed_attempt: bool = False,
        subscription_id: int | None = None,
    ) -> int:
        row = self.rows.setdefault((sub_key, interval), DeliveryRecord(sub_key, interval, None, status, 0))
        row.status, row.reason = status, reason
        row.attempts += 1 if failed_attempt else 0
        row.subscription_id = subscription_id if subscription_id is not None else row.subscription_id
        return row.attempts

    async def open_deliveries(self) -> list[DeliveryRecord]:
        return [dataclasses.replace(row) for row in self.rows.values() if row.status.open]

    async def deliveries(self, sub_keys: Sequence[str]) -> list[DeliveryRecord]:
        return [dataclasses.replace(row) for row in self.rows.values() if row.sub_key in sub_keys]
