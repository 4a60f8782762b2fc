"""On-chain subscriptions through TestConsumer and deliverCompute, on a real anvil: the check
order and errors the node relies on (chain.md §3) and what the consumer receives."""

from __future__ import annotations

from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from web3 import AsyncWeb3, Web3
from web3.contract import AsyncContract
from web3.logs import DISCARD

from tests.support.chain import (
    UINT32_MAX,
    ZERO_ADDRESS,
    InfernetDeployment,
    TxFailed,
    cancel_subscription,
    containers_hash,
    create_callback,
    create_recurring,
    error_selector,
    expect_revert,
    increase_time,
    latest_timestamp,
    transact,
)

pytestmark = [pytest.mark.chain, pytest.mark.asyncio(loop_scope="session")]

NODE_RESPONDED_ALREADY = error_selector("NodeRespondedAlready")
INTERVAL_COMPLETED = error_selector("IntervalCompleted")
INTERVAL_MISMATCH = error_selector("IntervalMismatch")
SUBSCRIPTION_NOT_ACTIVE = error_selector("SubscriptionNotActive")
SUBSCRIPTION_NOT_FOUND = error_selector("SubscriptionNotFound")
SUBSCRIPTION_COMPLETED = error_selector("SubscriptionCompleted")
NOT_SUBSCRIPTION_OWNER = error_selector("NotSubscriptionOwner")


def interval_key(subscription_id: int, interval: int) -> bytes:
    return Web3.keccak(abi_encode(["uint32", "uint32"], [subscription_id, interval]))


def node_key(subscription_id: int, interval: int, node: str) -> bytes:
    return Web3.keccak(abi_encode(["uint32", "uint32", "address"], [subscription_id, interval, node]))


def deliver(chain: InfernetDeployment, subscription_id: int, interval: int, output: bytes = b"out") -> Any:
    return chain.coordinator.functions.deliverCompute(subscription_id, interval, b"in", output, b"", ZERO_ADDRESS)


async def test_callback_subscription_is_created_as_specified(
    anvil_w3: AsyncWeb3[Any],
    infernet_chain: InfernetDeployment,
    infernet_consumer: AsyncContract,
    anvil_accounts: list[LocalAccount],
) -> None:
    head_before = await infernet_chain.coordinator.functions.id().call()
    sub_id = await create_callback(infernet_consumer, anvil_accounts[1].address, ["a", "b"], b"\x01\x02", redundancy=2)
    assert sub_id == head_before
    assert await infernet_chain.coordinator.functions.id().call() == sub_id + 1

    sub = await infernet_chain.coordinator.functions.getSubscription(sub_id).call()
    now = await latest_timestamp(anvil_w3)
    assert sub == (
        infernet_consumer.address, now, 0, 1, 2, bytes.fromhex(containers_hash(["a", "b"])[2:]),
        False, ZERO_ADDRESS, 0, ZERO_ADDRESS, ZERO_ADDRESS,
    )  # fmt: skip
    # The doc's vector for "a,b": keccak of the ABI-encoded string, not of the text.
    assert containers_hash(["a", "b"]) == "0x0deeac3a841600829c99f8116bb997da266d4c47a720b00e6ace9594de82dd54"
    inputs = await infernet_consumer.functions.getContainerInputs(sub_id, 1, now, anvil_accounts[2].address).call()
    assert inputs == b"\x01\x02"


async def test_delivery_is_recorded_by_the_consumer(
    infernet_chain: InfernetDeployment, infernet_consumer: AsyncContract, anvil_accounts: list[LocalAccount]
) -> None:
    node = anvil_accounts[2].address
    sub_id = await create_callback(infernet_consumer, anvil_accounts[1].address, ["echo"], b"hi")

    receipt = await transact(deliver(infernet_chain, sub_id, 1, output=b"result"), node)

    fulfilled = infernet_chain.coordinator.events.SubscriptionFulfilled().process_receipt(receipt, errors=DISCARD)
    assert [(e["args"]["id"], e["args"]["node"]) for e in fulfilled] == [(sub_id, node)]
    received = infernet_consumer.events.DeliveryReceived().process_receipt(receipt, errors=DISCARD)
    assert len(received) == 1 and received[0]["args"]["output"] == b"result"

    assert await infernet_consumer.functions.deliveryCount().call() == 1
    delivery = await infernet_consumer.functions.deliveries(0).call()
    assert delivery == (sub_id, 1, 1, node, b"in", b"result", b"", b"\x00" * 32, 0)

    fns = infernet_chain.coordinator.functions
    assert await fns.redundancyCount(interval_key(sub_id, 1)).call() == 1
    assert await fns.nodeResponded(node_key(sub_id, 1, node)).call() is True
    assert await fns.nodeResponded(node_key(sub_id, 1, anvil_accounts[3].address)).call() is False


async def test_same_node_twice_is_node_responded_already(
    infernet_chain: InfernetDeployment, infernet_consumer: AsyncContract, anvil_accounts: list[LocalAccount]
) -> None:
    node_a, node_b, node_c = (a.address for a in anvil_accounts[2:5])
    sub_id = await create_callback(infernet_consumer, anvil_accounts[1].address, ["echo"], redundancy=2)
    await transact(deliver(infernet_chain, sub_id, 1), node_a)

    assert await expect_revert(deliver(infernet_chain, sub_id, 1).call({"from": node_a})) == NODE_RESPONDED_ALREADY
    # Gas estimation reverts the same way for a transaction.
    assert await expect_revert(deliver(infernet_chain, sub_id, 1).transact({"from": node_a})) == NODE_RESPONDED_ALREADY

    receipt = await transact(deliver(infernet_chain, sub_id, 1), node_b)
    assert receipt["status"] == 1
    assert (await infernet_consumer.functions.deliveries(1).call())[2] == 2  # redundancy seen by the consumer
    # Redundancy 2 met: a third node is refused before its own "responded" flag is looked at.
    assert await expect_revert(deliver(infernet_chain, sub_id, 1).call({"from": node_c})) == INTERVAL_COMPLETED
    assert await infernet_chain.coordinator.functions.redundancyCount(interval_key(sub_id, 1)).call() == 2


async def test_redundancy_met_by_another_node_is_interval_completed(
    infernet_chain: InfernetDeployment, infernet_consumer: AsyncContract, anvil_accounts: list[LocalAccount]
) -> None:
    sub_id = await create_callback(infernet_consumer, anvil_accounts[1].address, ["echo"], redundancy=1)
    await transact(deliver(infernet_chain, sub_id, 1), anvil_accounts[2].address)
    selector = await expect_revert(deliver(infernet_chain, sub_id, 1).call({"from": anvil_accounts[3].address}))
    assert selector == INTERVAL_COMPLETED
    # The same node again also gets IntervalCompleted: the redundancy check comes first.
    selector = await expect_revert(deliver(infernet_chain, sub_id, 1).call({"from": anvil_accounts[2].address}))
    assert selector == INTERVAL_COMPLETED


async def test_mined_revert_has_status_zero(
    infernet_chain: InfernetDeployment, infernet_consumer: AsyncContract, anvil_accounts: list[LocalAccount]
) -> None:
    """With an explicit gas limit the failing delivery is mined (what a node sees when it skips or
    loses a simulation race): status 0, nothing recorded."""
    sub_id = await create_callback(infernet_consumer, anvil_accounts[1].address, ["echo"])
    await transact(deliver(infernet_chain, sub_id, 1), anvil_accounts[2].address)
    with pytest.raises(TxFailed):
        await transact(deliver(infernet_chain, sub_id, 1), anvil_accounts[3].address, gas=500_000)
    assert await infernet_consumer.functions.deliveryCount().call() == 1


async def test_unknown_subscription_is_not_found(
    infernet_chain: InfernetDeployment, infernet_consumer: AsyncContract, anvil_accounts: list[LocalAccount]
) -> None:
    selector = await expect_revert(deliver(infernet_chain, 424242, 1).call({"from": anvil_accounts[2].address}))
    assert selector == SUBSCRIPTION_NOT_FOUND


async def test_recurring_subscription_intervals(
    anvil_w3: AsyncWeb3[Any],
    infernet_chain: InfernetDeployment,
    infernet_consumer: AsyncContract,
    anvil_accounts: list[LocalAccount],
) -> None:
    node = anvil_accounts[2].address
    period = 60
    sub_id = await create_recurring(
        infernet_consumer, anvil_accounts[1].address, ["echo"], frequency=2, period=period, inputs=b"tick"
    )
    created_at = await latest_timestamp(anvil_w3)
    sub = await infernet_chain.coordinator.functions.getSubscription(sub_id).call()
    active_at = sub[1]
    assert active_at == created_at + period and sub[2:5] == (period, 2, 1)

    # Starts one period later.
    assert await expect_revert(deliver(infernet_chain, sub_id, 1).call({"from": node})) == SUBSCRIPTION_NOT_ACTIVE

    await increase_time(anvil_w3, period)  # -> interval 1
    fns = infernet_chain.coordinator.functions
    assert await fns.getSubscriptionInterval(active_at, period).call() == 1
    assert await expect_revert(deliver(infernet_chain, sub_id, 2).call({"from": node})) == INTERVAL_MISMATCH
    await transact(deliver(infernet_chain, sub_id, 1), node)

    await increase_time(anvil_w3, period)  # -> interval 2 (the last)
    assert await fns.getSubscriptionInterval(active_at, period).call() == 2
    assert await expect_revert(deliver(infernet_chain, sub_id, 1).call({"from": node})) == INTERVAL_MISMATCH
    await transact(deliver(infernet_chain, sub_id, 2, output=b"second"), node)
    delivery = await infernet_consumer.functions.deliveries(1).call()
    assert (delivery[0], delivery[1], delivery[5]) == (sub_id, 2, b"second")

    await increase_time(anvil_w3, period)  # -> interval 3 > frequency
    assert await expect_revert(deliver(infernet_chain, sub_id, 3).call({"from": node})) == SUBSCRIPTION_COMPLETED


async def test_cancelled_subscription_is_not_active(
    anvil_w3: AsyncWeb3[Any],
    infernet_chain: InfernetDeployment,
    infernet_consumer: AsyncContract,
    anvil_accounts: list[LocalAccount],
) -> None:
    sender = anvil_accounts[1].address
    sub_id = await create_recurring(infernet_consumer, sender, ["echo"], frequency=3, period=10)
    await increase_time(anvil_w3, 10)
    coordinator = infernet_chain.coordinator

    # Only the owner (the consumer contract) may cancel.
    selector = await expect_revert(coordinator.functions.cancelSubscription(sub_id).call({"from": sender}))
    assert selector == NOT_SUBSCRIPTION_OWNER

    tx_hash = await infernet_consumer.functions.cancel(sub_id).transact({"from": sender})
    receipt = await anvil_w3.eth.wait_for_transaction_receipt(tx_hash)
    cancelled = coordinator.events.SubscriptionCancelled().process_receipt(receipt, errors=DISCARD)
    assert [e["args"]["id"] for e in cancelled] == [sub_id]
    assert (await coordinator.functions.getSubscription(sub_id).call())[1] == UINT32_MAX

    selector = await expect_revert(deliver(infernet_chain, sub_id, 1).call({"from": anvil_accounts[2].address}))
    assert selector == SUBSCRIPTION_NOT_ACTIVE


async def test_cancel_helper_and_unknown_owner(
    infernet_chain: InfernetDeployment, infernet_consumer: AsyncContract, anvil_accounts: list[LocalAccount]
) -> None:
    sub_id = await create_callback(infernet_consumer, anvil_accounts[1].address, ["echo"])
    await cancel_subscription(infernet_consumer, anvil_accounts[1].address, sub_id)
    assert (await infernet_chain.coordinator.functions.getSubscription(sub_id).call())[1] == UINT32_MAX
    # Cancelling a subscription that does not exist: nobody owns it.
    selector = await expect_revert(infernet_consumer.functions.cancel(999).call({"from": anvil_accounts[1].address}))
    assert selector == NOT_SUBSCRIPTION_OWNER


@pytest.mark.parametrize(
    ("lazy", "payment_amount", "verifier_index", "error"),
    [
        (False, 10, None, "PaymentsNotSupported"),
        (False, 0, 7, "ProofsNotSupported"),
        (True, 0, None, "LazyNotSupported"),
    ],
)
async def test_omitted_features_revert_at_delivery(
    infernet_chain: InfernetDeployment,
    infernet_consumer: AsyncContract,
    anvil_accounts: list[LocalAccount],
    lazy: bool,
    payment_amount: int,
    verifier_index: int | None,
    error: str,
) -> None:
    """Such subscriptions can be created (so node guardians can be tested on them) but never delivered."""
    verifier = anvil_accounts[verifier_index].address if verifier_index is not None else ZERO_ADDRESS
    fn = infernet_consumer.functions.createSubscription(
        "echo", 1, 0, 1, lazy, ZERO_ADDRESS, payment_amount, anvil_accounts[6].address, verifier
    )
    await transact(fn, anvil_accounts[1].address)
    sub_id = await infernet_chain.coordinator.functions.id().call() - 1
    sub = await infernet_chain.coordinator.functions.getSubscription(sub_id).call()
    assert (sub[6], sub[7], sub[8], sub[10]) == (lazy, verifier, payment_amount, anvil_accounts[6].address)
    selector = await expect_revert(deliver(infernet_chain, sub_id, 1).call({"from": anvil_accounts[2].address}))
    assert selector == error_selector(error)


async def test_consumer_only_accepts_the_coordinator(
    infernet_chain: InfernetDeployment, infernet_consumer: AsyncContract, anvil_accounts: list[LocalAccount]
) -> None:
    fn = infernet_consumer.functions.rawReceiveCompute(
        1, 1, 1, anvil_accounts[2].address, b"", b"", b"", b"\x00" * 32, 0
    )
    assert await expect_revert(fn.call({"from": anvil_accounts[2].address})) == error_selector("NotCoordinator")


async def test_consumer_can_reject_deliveries(
    infernet_chain: InfernetDeployment, infernet_consumer: AsyncContract, anvil_accounts: list[LocalAccount]
) -> None:
    sender = anvil_accounts[1].address
    sub_id = await create_callback(infernet_consumer, sender, ["echo"])
    await transact(infernet_consumer.functions.setRejectDeliveries(True), sender)
    selector = await expect_revert(deliver(infernet_chain, sub_id, 1).call({"from": anvil_accounts[2].address}))
    assert selector == error_selector("DeliveryRejected")  # the consumer's error bubbles up
    await transact(infernet_consumer.functions.setRejectDeliveries(False), sender)
    await transact(deliver(infernet_chain, sub_id, 1), anvil_accounts[2].address)


async def test_state_is_isolated_between_tests(
    infernet_chain: InfernetDeployment, infernet_consumer: AsyncContract
) -> None:
    """chain_snapshot reverts every test: the session deployment starts with no subscriptions."""
    assert await infernet_chain.coordinator.functions.id().call() == 1
    assert await infernet_consumer.functions.deliveryCount().call() == 0
