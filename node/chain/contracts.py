"""The reads the node makes from the chain, each pinned to a block when it matters."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address
from web3 import AsyncWeb3
from web3.types import BlockIdentifier

from node.chain.abi import CONSUMER_ABI, COORDINATOR_ABI, ERC20_ABI, READER_ABI, WALLET_FACTORY_ABI
from node.chain.registry import Addresses
from node.chain.subscription import ZERO_ADDRESS, Subscription

BlockId = BlockIdentifier


def interval_key(subscription_id: int, interval: int) -> bytes:
    return keccak(abi_encode(["uint32", "uint32"], [subscription_id, interval]))


def node_key(subscription_id: int, interval: int, node: str) -> bytes:
    return keccak(abi_encode(["uint32", "uint32", "address"], [subscription_id, interval, node]))


def delegate_key(owner: str, nonce: int) -> bytes:
    return keccak(abi_encode(["address", "uint32"], [owner, nonce]))


@dataclass(frozen=True, slots=True)
class Block:
    number: int
    timestamp: int


class BlockClock:
    """The latest block as last seen: chain time for interval math and expiry checks."""

    def __init__(self, w3: AsyncWeb3) -> None:
        self._w3 = w3
        self.latest: Block | None = None
        self.seen_at = 0.0

    async def refresh(self) -> Block:
        block = await self._w3.eth.get_block("latest")
        self.latest = Block(int(block["number"]), int(block["timestamp"]))
        self.seen_at = time.monotonic()
        return self.latest

    async def now(self, max_age: float = 1.0) -> int:
        """The latest block's timestamp, fetched again if what we have is older than `max_age` s."""
        if self.latest is None or time.monotonic() - self.seen_at > max_age:
            await self.refresh()
        assert self.latest is not None
        return self.latest.timestamp


class Contracts:
    def __init__(self, w3: AsyncWeb3, addresses: Addresses) -> None:
        self.w3 = w3
        self.addresses = addresses
        self.coordinator = w3.eth.contract(address=to_checksum_address(addresses.coordinator), abi=COORDINATOR_ABI)
        self.reader = (
            w3.eth.contract(address=to_checksum_address(addresses.reader), abi=READER_ABI)
            if addresses.reader != ZERO_ADDRESS
            else None
        )
        self.wallet_factory = (
            w3.eth.contract(address=to_checksum_address(addresses.wallet_factory), abi=WALLET_FACTORY_ABI)
            if addresses.wallet_factory != ZERO_ADDRESS
            else None
        )

    def consumer(self, owner: str) -> Any:
        return self.w3.eth.contract(address=to_checksum_address(owner), abi=CONSUMER_ABI)

    # -- coordinator --------------------------------------------------------------

    async def head_subscription_id(self, block: BlockId) -> int:
        """The newest subscription id at `block` (0 when there is none)."""
        return int(await self.coordinator.functions.id().call(block_identifier=block)) - 1

    async def subscription(self, subscription_id: int, block: BlockId = "latest") -> Subscription:
        fields = await self.coordinator.functions.getSubscription(subscription_id).call(block_identifier=block)
        return Subscription.from_chain(subscription_id, fields)

    async def subscriptions(self, start: int, end: int, block: BlockId) -> list[Subscription]:
        """Subscriptions with ids in [start, end), read at `block` (empty slots included)."""
        if self.reader is not None:
            batch = await self.reader.functions.readSubscriptionBatch(start, end).call(block_identifier=block)
            return [Subscription.from_chain(start + offset, fields) for offset, fields in enumerate(batch)]
        return list(await asyncio.gather(*(self.subscription(i, block) for i in range(start, end))))

    async def redundancy_counts(self, ids: list[int], intervals: list[int], block: BlockId) -> list[int]:
        if not ids:
            return []
        if self.reader is not None:
            counts = await self.reader.functions.readRedundancyCountBatch(ids, intervals).call(block_identifier=block)
            return [int(count) for count in counts]
        return list(
            await asyncio.gather(*(self.redundancy_count(i, n, block) for i, n in zip(ids, intervals, strict=True)))
        )

    async def redundancy_count(self, subscription_id: int, interval: int, block: BlockId = "latest") -> int:
        key = interval_key(subscription_id, interval)
        return int(await self.coordinator.functions.redundancyCount(key).call(block_identifier=block))

    async def node_responded(self, subscription_id: int, interval: int, node: str, block: BlockId = "latest") -> bool:
        key = node_key(subscription_id, interval, node)
        return bool(await self.coordinator.functions.nodeResponded(key).call(block_identifier=block))

    async def delegate_created_id(self, owner: str, nonce: int, block: BlockId = "latest") -> int:
        key = delegate_key(owner, nonce)
        return int(await self.coordinator.functions.delegateCreatedIds(key).call(block_identifier=block))

    # -- consumer -----------------------------------------------------------------

    async def container_inputs(
        self, owner: str, subscription_id: int, interval: int, timestamp: int, node: str
    ) -> bytes:
        fn = self.consumer(owner).functions.getContainerInputs(subscription_id, interval, timestamp, node)
        return bytes(await fn.call())

    async def signer_of(self, owner: str) -> str:
        return to_checksum_address(await self.consumer(owner).functions.getSigner().call())

    # -- payments -----------------------------------------------------------------

    async def can_pay(self, sub: Subscription) -> bool:
        """The subscription's wallet is a real Infernet wallet holding at least the payment."""
        if self.wallet_factory is None:
            return False
        if not await self.wallet_factory.functions.isValidWallet(sub.wallet).call():
            return False
        if sub.payment_token == ZERO_ADDRESS:
            balance = await self.w3.eth.get_balance(to_checksum_address(sub.wallet))
        else:
            token = self.w3.eth.contract(address=to_checksum_address(sub.payment_token), abi=ERC20_ABI)
            balance = await token.functions.balanceOf(sub.wallet).call()
        return int(balance) >= sub.payment_amount
