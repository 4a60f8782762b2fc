"""Delegated subscriptions over REST: check, store, hand to the processor.

`accept` answers the REST request. It only does what needs no chain round trip
beyond the cached latest block: the guardian's rules (405 JSON on refusal, never a
500) and recovering the EIP-712 signer locally. The subscription is stored before
the answer (200 {}); the processor then compares the signer with the owner's
`getSigner()` and delivers. A signer mismatch is logged and never reported over
REST, as with the reference node.
"""

from __future__ import annotations

import logging

from node.chain.contracts import BlockClock
from node.chain.eip712 import recover_signer
from node.chain.guardian import ChainGuardian
from node.chain.processor import Processor
from node.chain.records import DelegatedRecord
from node.chain.subscription import Subscription
from node.jobs.desk import DelegatedRequest
from node.jobs.errors import Rejected, Unavailable
from node.store.chain_repository import SqlChainRepository

log = logging.getLogger(__name__)


class DelegatedHandler:
    def __init__(
        self,
        guardian: ChainGuardian,
        clock: BlockClock,
        repository: SqlChainRepository,
        processor: Processor,
        chain_id: int,
        coordinator: str,
    ) -> None:
        self._guardian = guardian
        self._clock = clock
        self._repository = repository
        self._processor = processor
        self._chain_id = chain_id
        self._coordinator = coordinator

    async def accept(self, request: DelegatedRequest) -> None:
        try:
            sub = Subscription.from_wire(request.subscription)
        except (KeyError, ValueError, TypeError) as error:
            raise Rejected("Invalid subscription", {"reason": str(error)}) from None
        signature = request.signature
        nonce, expiry = int(signature["nonce"]), int(signature["expiry"])
        try:
            now = await self._clock.now()
        except Exception as error:
            raise Unavailable("Chain not reachable", {"reason": type(error).__name__}) from None
        containers = self._guardian.check_delegated(sub, expiry, now)
        extra = {
            "subscription_id": f"del:{sub.owner.lower()}:{nonce}",
            "delegated": {"owner": sub.owner, "nonce": nonce},
        }
        try:
            signer = recover_signer(
                sub, nonce, expiry, int(signature["v"]), int(signature["r"]), int(signature["s"]),
                self._chain_id, self._coordinator,
            )  # fmt: skip
        except ValueError as error:
            # Like a wrong signer: not delivered, said in the log, not on the wire.
            log.warning(
                "delegated subscription %s/%d not delivered: %s", sub.owner, nonce, error, extra=extra
            )
            return
        record = DelegatedRecord(
            owner=sub.owner.lower(),
            nonce=nonce,
            subscription=dict(request.subscription),
            signature=dict(signature),
            data=request.data,
            signer=signer,
        )
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
