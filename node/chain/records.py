"""What the chain module keeps in the store, free of SQL."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class DelegatedStatus(str, enum.Enum):
    # Stored before the node checked signers on the REST request (older versions); the
    # processor checks the signer first. New subscriptions are stored as TRACKING.
    ACCEPTED = "accepted"
    TRACKING = "tracking"  # signer checked; waiting to deliver
    DELIVERED = "delivered"
    REJECTED = "rejected"  # an ACCEPTED one whose signer is not the owner's: never delivered
    DROPPED = "dropped"  # gave up (expired, completed, failed too often...)

    @property
    def open(self) -> bool:
        return self in (DelegatedStatus.ACCEPTED, DelegatedStatus.TRACKING)


class DeliveryStatus(str, enum.Enum):
    RUNNING = "running"  # reading inputs / running containers / simulating
    SENT = "sent"  # transaction signed and handed to the chain; its hash is known
    DELIVERED = "delivered"  # mined with status 1
    FAILED = "failed"  # the last attempt failed; another may follow
    ABANDONED = "abandoned"  # no more attempts

    @property
    def open(self) -> bool:
        return self in (DeliveryStatus.RUNNING, DeliveryStatus.SENT)


@dataclass(slots=True)
class DelegatedRecord:
    owner: str  # lower-case
    nonce: int
    subscription: dict[str, Any]  # the wire object
    signature: dict[str, Any]  # nonce, expiry, v, r, s
    data: Any
    signer: str
    status: DelegatedStatus = DelegatedStatus.ACCEPTED
    reason: str | None = None
    subscription_id: int | None = None
    created_at: float = 0.0

    @property
    def key(self) -> str:
        return delegated_key(self.owner, self.nonce)


@dataclass(slots=True)
class DeliveryRecord:
    sub_key: str
    interval: int
    subscription_id: int | None
    status: DeliveryStatus
    attempts: int
    tx_hash: str | None = None
    tx_nonce: int | None = None
    reason: str | None = None


def onchain_key(subscription_id: int) -> str:
    return f"sub:{subscription_id}"


def delegated_key(owner: str, nonce: int) -> str:
    return f"del:{owner.lower()}:{nonce}"
