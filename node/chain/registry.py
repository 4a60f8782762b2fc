"""Contract addresses, read once from the immutable Infernet Registry."""

from __future__ import annotations

from dataclasses import dataclass

from eth_utils import to_checksum_address
from web3 import AsyncWeb3

from node.chain.abi import REGISTRY_ABI
from node.chain.subscription import ZERO_ADDRESS


class RegistryError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Addresses:
    registry: str
    coordinator: str
    reader: str  # zero when the deployment has no Reader: subscriptions are then read one by one
    wallet_factory: str  # zero when the deployment has no payments


async def load_addresses(w3: AsyncWeb3, registry_address: str) -> Addresses:
    registry = to_checksum_address(registry_address)
    code = await w3.eth.get_code(registry)
    if not code:
        raise RegistryError(f"no contract at registry_address {registry}")
    contract = w3.eth.contract(address=registry, abi=REGISTRY_ABI)
    coordinator = to_checksum_address(await contract.functions.COORDINATOR().call())
    reader = to_checksum_address(await contract.functions.READER().call())
    wallet_factory = to_checksum_address(await contract.functions.WALLET_FACTORY().call())
    if coordinator == ZERO_ADDRESS:
        raise RegistryError(f"the registry at {registry} has no coordinator")
    return Addresses(registry, coordinator, reader, wallet_factory)
