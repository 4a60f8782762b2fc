"""Discovering subscriptions: a snapshot of the existing ones, then each new id.

All reads of one pass are pinned to one block, `trail_head_blocks` behind the head,
so that a reorg of the newest blocks cannot show the node a subscription that then
disappears, and the reads agree with each other (chain.md §4). New subscriptions
are found by polling the coordinator's `id` counter; no logs, no filters.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from web3 import AsyncWeb3

from node.chain.contracts import Block, Contracts
from node.chain.guardian import ChainGuardian
from node.chain.processor import ChainObserver, Processor
from node.chain.subscription import Subscription
from node.config import SnapshotSyncConfig

log = logging.getLogger(__name__)

T = TypeVar("T")


class Listener:
    def __init__(
        self,
        w3: AsyncWeb3,
        contracts: Contracts,
        guardian: ChainGuardian,
        processor: Processor,
        trail_head_blocks: int,
        sync: SnapshotSyncConfig,
        observer: ChainObserver | None = None,
    ) -> None:
        self._observer = observer
        self._w3 = w3
        self._contracts = contracts
        self._guardian = guardian
        self._processor = processor
        self._trail = trail_head_blocks
        self._sync = sync
        self.last_id = sync.starting_sub_id
        self.last_block = -1

    async def _head(self) -> Block:
        number = max(0, int(await self._w3.eth.block_number) - self._trail)
        block = await self._w3.eth.get_block(number)
        return Block(number, int(block["timestamp"]))

    async def _retrying(self, make: Callable[[], Awaitable[T]], what: str) -> T:
        delay = max(self._sync.sleep, 0.1)
        while True:
            try:
                return await make()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("%s failed (%s: %s); retrying in %gs", what, type(error).__name__, error, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def run_forever(self) -> None:
        head = await self._retrying(self._head, "reading the chain head")
        await self.sync_to(head)
        log.info("snapshot sync done: up to subscription %d at block %d", self.last_id, head.number)
        while True:
            await asyncio.sleep(self._sync.sync_period)
            try:
                head = await self._head()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("reading the chain head failed (%s: %s)", type(error).__name__, error)
                continue
            if head.number > self.last_block:
                await self.sync_to(head)

    async def sync_to(self, head: Block) -> None:
        """Read every subscription created up to `head` that was not seen yet."""
        head_id = await self._retrying(
            lambda: self._contracts.head_subscription_id(head.number), "reading the subscription counter"
        )
        start = self.last_id + 1
        first = True
        while start <= head_id:
            if not first and self._sync.sleep:
                await asyncio.sleep(self._sync.sleep)
            first = False
            end = min(start + self._sync.batch_size, head_id + 1)
            batch = await self._retrying(
                functools.partial(self._contracts.subscriptions, start, end, head.number),
                f"reading subscriptions {start}..{end - 1}",
            )
            await self._consider(batch, head)
            self.last_id = end - 1
            start = end
        self.last_block = head.number
        if self._observer is not None:
            self._observer.synced(head.number)

    async def _consider(self, batch: list[Subscription], head: Block) -> None:
        now = head.timestamp
        candidates: list[tuple[Subscription, list[str]]] = []
        for sub in batch:
            if not sub.exists:
                continue
            extra = {"subscription_id": sub.id}
            if sub.cancelled:
                log.debug("subscription %d is cancelled", sub.id, extra=extra)
                continue
            if sub.past_last_interval(now):
                log.debug("subscription %d is past its last interval", sub.id, extra=extra)
                continue
            containers, refusal = self._guardian.check_onchain(sub)
            if refusal is not None:
                log.info("subscription %d is not served by this node: %s", sub.id, refusal, extra=extra)
                continue
            candidates.append((sub, containers))
        # Subscriptions in their last interval whose redundancy is met are complete: skip them.
        last = [sub for sub, _ in candidates if sub.on_last_interval(now)]
        counts = await self._retrying(
            lambda: self._contracts.redundancy_counts(
                [sub.id for sub in last],  # type: ignore[misc]
                [sub.frequency for sub in last],
                head.number,
            ),
            "reading redundancy counts",
        )
        complete = {sub.id for sub, count in zip(last, counts, strict=True) if count >= sub.redundancy}
        for sub, containers in candidates:
            if sub.id in complete:
                log.debug("subscription %d is complete", sub.id, extra={"subscription_id": sub.id})
                continue
            self._processor.track(sub, containers)
