"""Delegated subscriptions over REST: check, store, hand to the processor.

`accept` answers the REST request, and answers `200 {}` only for a subscription the
node can deliver:

- the guardian's rules refuse with the reference node's 405 JSON errors
  (client-contract.md §6): expired signature, containers, proofs, allow-lists, payment;
- what the coordinator would refuse for ever gets a 400 naming the reason, and nothing
  is stored: a signature that recovers to no address, a signer that is not the owner's
  `getSigner()` (read from the chain, cached: signers.py), a schedule with no interval
  left to deliver, and a start after the signature's expiry. The reference node answers
  `200 {}` to those and only logs them; the client then prints "Success".

The subscription is stored before the answer; the processor delivers it.
"""

from __future__ import annotations

import logging
from typing import Any

from node.chain.contracts import BlockClock, Contracts
from node.chain.eip712 import recover_signer
from node.chain.guardian import ChainGuardian
from node.chain.ports import ChainRepository
from node.chain.processor import Processor
from node.chain.records import DelegatedRecord, DelegatedStatus
from node.chain.signers import SignerCache
from node.chain.subscription import Subscription
from node.jobs.desk import DelegatedRequest
from node.jobs.errors import InvalidRequest, Unavailable

log = logging.getLogger(__name__)


def schedule_refusal(sub: Subscription, expiry: int, now: int) -> tuple[str, dict[str, Any]] | None:
    """Why no delivery of `sub` can ever succeed at chain time `now` or later, from its fields
    alone (the coordinator's SubscriptionCompleted / IntervalCompleted); None if one can."""
    if sub.cancelled:
        return "Subscription is cancelled", {"active_at": sub.active_at}
    if sub.frequency == 0:
        return "Subscription has no intervals", {"frequency": 0}
    if sub.redundancy == 0:
        return "Subscription allows no deliveries", {"redundancy": 0}
    if sub.past_last_interval(now):
        return "Subscription completed", {"frequency": sub.frequency, "interval": sub.interval(now)}
    return None


class DelegatedHandler:
    def __init__(
        self,
        guardian: ChainGuardian,
        clock: BlockClock,
        contracts: Contracts,
        signers: SignerCache,
        repository: ChainRepository,
        processor: Processor,
        chain_id: int,
    ) -> None:
        self._guardian = guardian
        self._clock = clock
        self._contracts = contracts
        self._signers = signers
        self._repository = repository
        self._processor = processor
        self._chain_id = chain_id
        self._coordinator = contracts.addresses.coordinator

    async def accept(self, request: DelegatedRequest) -> None:
        try:
            sub = Subscription.from_wire(request.subscription)
        except (KeyError, ValueError, TypeError) as error:
            raise InvalidRequest("Invalid subscription", {"reason": str(error)}) from None
        signature = request.signature
        nonce, expiry = int(signature["nonce"]), int(signature["expiry"])
        try:
            now = await self._clock.now()
        except Exception as error:
            raise Unavailable("Chain not reachable", {"reason": type(error).__name__}) from None
        containers = self._guardian.check_delegated(sub, expiry, now)
        try:
            signer = recover_signer(
                sub, nonce, expiry, int(signature["v"]), int(signature["r"]), int(signature["s"]),
                self._chain_id, self._coordinator,
            )  # fmt: skip
        except ValueError as error:
            raise InvalidRequest("Invalid signature", {"reason": str(error)}) from None
        refusal = schedule_refusal(sub, expiry, now)
        if refusal is not None:
            raise InvalidRequest(*refusal)
        await self._check_chain(sub, nonce, expiry, signer)
        record = DelegatedRecord(
            owner=sub.owner.lower(),
            nonce=nonce,
            subscription=dict(request.subscription),
            signature=dict(signature),
            data=request.data,
            signer=signer,
            status=DelegatedStatus.TRACKING,  # the signer is checked
        )
        extra = {"subscription_id": record.key, "delegated": {"owner": sub.owner, "nonce": nonce}}
        if not await self._repository.add_delegated(record):
            log.info("delegated subscription %s/%d is known already", sub.owner, nonce, extra=extra)
            return
        log.info(
            "accepted delegated subscription %s/%d (containers %s, signed by %s)",
            sub.owner,
            nonce,
            ",".join(containers),
            signer,
            extra=extra,
        )
        self._processor.track_delegated(record, sub, containers)

    async def _check_chain(self, sub: Subscription, nonce: int, expiry: int, signer: str) -> None:
        """What the coordinator will say about the signer, and about a start past the expiry."""
        try:
            allowed, expected = await self._signers.matches(sub.owner, signer)
            # Created and delivered in one transaction, before the expiry and not before activeAt:
            # unless someone created it already, a start at or after the expiry can never be delivered.
            late_start = sub.active_at >= expiry and not await self._contracts.delegate_created_id(sub.owner, nonce)
        except Exception as error:
            raise Unavailable("Chain not reachable", {"reason": type(error).__name__}) from None
        if not allowed:
            # Public addresses only: the owner's signer is on chain for anyone to read.
            raise InvalidRequest("Signer mismatch", {"signer": signer, "owner_signer": expected, "owner": sub.owner})
        if late_start:
            raise InvalidRequest(
                "Subscription starts after its signature expires", {"active_at": sub.active_at, "expiry": expiry}
            )
