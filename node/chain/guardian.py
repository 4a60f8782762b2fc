"""Which subscriptions this node serves (chain.md §6, §7).

On-chain subscriptions that fail a rule are skipped (and logged); delegated ones
are refused over REST with the 405 JSON errors of client-contract.md §6.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from node.chain.containers_lookup import ContainerLookup
from node.chain.subscription import Subscription
from node.config import ContainerConfig
from node.jobs.errors import Rejected


@dataclass(frozen=True, slots=True)
class Refusal:
    error: str
    params: dict[str, Any]

    def __str__(self) -> str:
        details = ", ".join(f"{key}={value}" for key, value in self.params.items())
        return f"{self.error} ({details})" if details else self.error


def _allowed(address: str, allow_list: Sequence[str]) -> bool:
    """Empty allow-lists allow everyone; addresses compare case-insensitively."""
    return not allow_list or address.lower() in {item.lower() for item in allow_list}


class ChainGuardian:
    def __init__(
        self,
        containers: Sequence[ContainerConfig],
        lookup: ContainerLookup,
        payment_address: str | None,
    ) -> None:
        self._containers = {container.id: container for container in containers}
        self._lookup = lookup
        self._payment_address = payment_address

    # -- shared rules -----------------------------------------------------------

    def _containers_of(self, sub: Subscription) -> tuple[list[str], Refusal | None]:
        chain = self._lookup.containers(sub.containers_hash)
        if not chain or any(container_id not in self._containers for container_id in chain):
            return [], Refusal("Container-set not supported", {"containers_hash": sub.containers_hex})
        first = self._containers[chain[0]]
        if not first.external:
            return chain, Refusal("First container must be external", {"first_container": first.id})
        return chain, None

    def _proof(self, sub: Subscription, chain: list[str]) -> Refusal | None:
        last = self._containers[chain[-1]]
        if sub.requires_proof and not last.generates_proofs:
            return Refusal("Container does not generate proof", {"container": last.id})
        return None

    def _payment(self, sub: Subscription, chain: list[str]) -> Refusal | None:
        if sub.provides_payment and not self._payment_address:
            return Refusal("Node does not accept payments", {"payment_amount": sub.payment_amount})
        token = sub.payment_token.lower()
        required = 0
        for container_id in chain:
            accepted = {key.lower(): value for key, value in self._containers[container_id].accepted_payments.items()}
            if not accepted:
                continue
            if token not in accepted:
                return Refusal(
                    "Payment token not accepted", {"container": container_id, "payment_token": sub.payment_token}
                )
            required += accepted[token]
        if sub.payment_amount < required:
            return Refusal(
                "Insufficient payment",
                {"payment_amount": sub.payment_amount, "required": required, "payment_token": sub.payment_token},
            )
        return None

    # -- on-chain ---------------------------------------------------------------

    def check_onchain(self, sub: Subscription) -> tuple[list[str], Refusal | None]:
        """(container chain, None) if this node serves `sub`, else (…, the reason it does not)."""
        chain, refusal = self._containers_of(sub)
        if refusal:
            return chain, refusal
        for container_id in chain:
            if not _allowed(sub.owner, self._containers[container_id].allowed_addresses):
                return chain, Refusal(
                    "Container not allowed for address", {"container": container_id, "address": sub.owner}
                )
        refusal = self._proof(sub, chain) or self._payment(sub, chain)
        return chain, refusal

    # -- delegated --------------------------------------------------------------

    def check_delegated(self, sub: Subscription, expiry: int, now: int) -> list[str]:
        """The container chain of a delegated subscription, or raise Rejected (HTTP 405)."""
        if expiry <= now:
            raise Rejected("Signature expired", {"expiry": expiry, "chain_time": now})
        chain, refusal = self._containers_of(sub)
        if refusal is None:
            refusal = self._proof(sub, chain)
        if refusal is None:
            for container_id in chain:
                if not _allowed(sub.owner, self._containers[container_id].allowed_delegate_addresses):
                    refusal = Refusal(
                        "Container not allowed for address", {"container": container_id, "address": sub.owner}
                    )
                    break
        if refusal is None:
            refusal = self._payment(sub, chain)
        if refusal is not None:
            raise Rejected(refusal.error, refusal.params)
        return chain
