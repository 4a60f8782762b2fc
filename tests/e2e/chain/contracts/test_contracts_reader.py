"""Reader batch views and the Registry address book."""

from __future__ import annotations

import pytest
from eth_account.signers.local import LocalAccount
from web3.contract import AsyncContract

from tests.support.chain import (
    ZERO_ADDRESS,
    InfernetDeployment,
    create_callback,
    create_recurring,
    error_selector,
    expect_revert,
    transact,
)

pytestmark = [pytest.mark.chain, pytest.mark.asyncio(loop_scope="session")]


async def test_registry_points_at_the_deployment(infernet_chain: InfernetDeployment) -> None:
    registry = infernet_chain.registry.functions
    assert await registry.COORDINATOR().call() == infernet_chain.coordinator_address
    assert await registry.READER().call() == infernet_chain.reader_address
    assert await registry.INBOX().call() == ZERO_ADDRESS
    assert await registry.FEE().call() == ZERO_ADDRESS
    assert await registry.WALLET_FACTORY().call() == ZERO_ADDRESS
    assert await infernet_chain.reader.functions.COORDINATOR().call() == infernet_chain.coordinator_address


async def test_read_subscription_batch_is_half_open(
    infernet_chain: InfernetDeployment, infernet_consumer: AsyncContract, anvil_accounts: list[LocalAccount]
) -> None:
    sender = anvil_accounts[1].address
    ids = [
        await create_callback(infernet_consumer, sender, ["a"]),
        await create_recurring(infernet_consumer, sender, ["b"], frequency=3, period=5, redundancy=2),
        await create_callback(infernet_consumer, sender, ["a", "b"]),
    ]
    assert ids == [1, 2, 3]
    coordinator = infernet_chain.coordinator.functions
    batch = await infernet_chain.reader.functions.readSubscriptionBatch(1, 5).call()
    assert len(batch) == 4
    for sub_id, sub in zip(ids, batch[:3], strict=True):
        assert sub == await coordinator.getSubscription(sub_id).call()
    assert batch[3][0] == ZERO_ADDRESS and batch[3][3:5] == (0, 0)  # not created yet: zeroed
    assert await infernet_chain.reader.functions.readSubscriptionBatch(2, 3).call() == [batch[1]]
    assert await infernet_chain.reader.functions.readSubscriptionBatch(2, 2).call() == []


async def test_read_redundancy_count_batch(
    infernet_chain: InfernetDeployment, infernet_consumer: AsyncContract, anvil_accounts: list[LocalAccount]
) -> None:
    sender = anvil_accounts[1].address
    first = await create_callback(infernet_consumer, sender, ["a"], redundancy=2)
    second = await create_callback(infernet_consumer, sender, ["a"])
    for node in anvil_accounts[2:4]:
        fn = infernet_chain.coordinator.functions.deliverCompute(first, 1, b"", b"", b"", ZERO_ADDRESS)
        await transact(fn, node.address)
    reader = infernet_chain.reader.functions
    assert await reader.readRedundancyCountBatch([first, second, first], [1, 1, 2]).call() == [2, 0, 0]
    assert await reader.readRedundancyCountBatch([], []).call() == []
    selector = await expect_revert(reader.readRedundancyCountBatch([first], [1, 2]).call())
    assert selector == error_selector("LengthMismatch")
