"""The Infernet Subscription and its interval math.

"Now" is always a chain timestamp (the latest block's), passed in by the caller:
the coordinator judges deliveries by `block.timestamp`, so the node must too
(chain.md §3). Nothing here reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address

UINT32_MAX = 2**32 - 1
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


def hash_bytes(value: str | bytes) -> bytes:
    """A 32-byte hash from bytes or hex text (with or without 0x, any case)."""
    raw = bytes.fromhex(value[2:] if value[:2] in ("0x", "0X") else value) if isinstance(value, str) else bytes(value)
    if len(raw) != 32:
        raise ValueError(f"expected 32 bytes, got {len(raw)}")
    return raw


class NotActive(ValueError):
    """Asked for the interval of a subscription that is not active yet (or cancelled)."""


@dataclass(frozen=True, slots=True)
class Subscription:
    id: int | None  # None for a delegated subscription not (yet) known on chain
    owner: str
    active_at: int
    period: int
    frequency: int
    redundancy: int
    containers_hash: bytes
    lazy: bool
    verifier: str
    payment_amount: int
    payment_token: str
    wallet: str

    # -- building -------------------------------------------------------------

    @classmethod
    def from_chain(cls, subscription_id: int | None, fields: Any) -> Subscription:
        """From the `Subscription` tuple a coordinator or reader call returns."""
        owner, active_at, period, frequency, redundancy, container_id, lazy, verifier, amount, token, wallet = fields
        return cls(
            id=subscription_id,
            owner=to_checksum_address(owner),
            active_at=int(active_at),
            period=int(period),
            frequency=int(frequency),
            redundancy=int(redundancy),
            containers_hash=bytes(container_id),
            lazy=bool(lazy),
            verifier=to_checksum_address(verifier),
            payment_amount=int(amount),
            payment_token=to_checksum_address(token),
            wallet=to_checksum_address(wallet),
        )

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> Subscription:
        """From the REST body's `subscription` object (client-contract.md §5.3)."""
        return cls(
            id=None,
            owner=to_checksum_address(body["owner"]),
            active_at=int(body["active_at"]),
            period=int(body["period"]),
            frequency=int(body["frequency"]),
            redundancy=int(body["redundancy"]),
            containers_hash=hash_bytes(body["containers"]),
            lazy=bool(body["lazy"]),
            verifier=to_checksum_address(body["verifier"]),
            payment_amount=int(body["payment_amount"]),
            payment_token=to_checksum_address(body["payment_token"]),
            wallet=to_checksum_address(body["wallet"]),
        )

    def to_chain(self) -> tuple[Any, ...]:
        """The tuple contract calls take (e.g. deliverComputeDelegatee's `sub`)."""
        return (
            self.owner,
            self.active_at,
            self.period,
            self.frequency,
            self.redundancy,
            self.containers_hash,
            self.lazy,
            self.verifier,
            self.payment_amount,
            self.payment_token,
            self.wallet,
        )

    def with_id(self, subscription_id: int) -> Subscription:
        return Subscription(subscription_id, *self.to_chain())

    # -- state ----------------------------------------------------------------

    @property
    def exists(self) -> bool:
        return self.owner != ZERO_ADDRESS

    @property
    def cancelled(self) -> bool:
        return self.active_at == UINT32_MAX

    @property
    def is_callback(self) -> bool:
        return self.period == 0

    @property
    def requires_proof(self) -> bool:
        return self.verifier != ZERO_ADDRESS

    @property
    def provides_payment(self) -> bool:
        return self.payment_amount > 0

    @property
    def containers_hex(self) -> str:
        return "0x" + self.containers_hash.hex()

    def active(self, now: int) -> bool:
        """The coordinator accepts deliveries once `block.timestamp >= activeAt`."""
        return not self.cancelled and now >= self.active_at

    def interval(self, now: int) -> int:
        """The interval a delivery at chain time `now` belongs to (1-based)."""
        if not self.active(now):
            raise NotActive(f"subscription {self.id} is not active at {now}")
        if self.period == 0:
            return 1
        return (now - self.active_at) // self.period + 1

    def past_last_interval(self, now: int) -> bool:
        return self.active(now) and self.interval(now) > self.frequency

    def on_last_interval(self, now: int) -> bool:
        return self.active(now) and self.interval(now) == self.frequency
