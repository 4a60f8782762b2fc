"""On-chain subscriptions: found by the listener, run through real services, delivered on anvil."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from eth_abi import encode as abi_encode

from tests.e2e.chain.helpers import decode_string, deliveries, node_tx_count, wait_until
from tests.support.chain import (
    ZERO_ADDRESS,
    cancel_subscription,
    create_callback,
    create_recurring,
    deploy,
    deploy_consumer,
    increase_time,
    rpc,
    transact,
)
from tests.support.processes import service_process

pytestmark = [pytest.mark.chain, pytest.mark.asyncio(loop_scope="session")]

PERIOD = 600  # long enough that wall-clock seconds never move a subscription to its next interval


async def test_callback_is_delivered_once_with_the_service_output(
    anvil_w3: Any, anvil_accounts: list[Any], infernet_consumer: Any, chain_node: Any
) -> None:
    node = chain_node().start()
    sender = anvil_accounts[0].address
    sub_id = await create_callback(infernet_consumer, sender, ["echo"], b"hello chain")
    chained_id = await create_callback(infernet_consumer, sender, ["echo", "inner"], b"\x00\xff")

    found = await wait_until(lambda: _at_least(deliveries(infernet_consumer), 2), what="both deliveries")
    by_id = {delivery.subscription_id: delivery for delivery in found}
    assert set(by_id) == {sub_id, chained_id} and len(found) == 2
    delivery = by_id[sub_id]
    assert delivery.interval == 1 and delivery.node == anvil_accounts[1].address
    # The echo service returned its input, the hex of the consumer's inputs; the node delivers
    # abi.encode(string) of it, as the reference node does.
    assert decode_string(delivery.output) == b"hello chain".hex()
    assert delivery.input == b"" and delivery.proof == b""
    assert decode_string(by_id[chained_id].output) == "00ff"

    await asyncio.sleep(1.0)  # give a duplicate every chance to appear
    assert len(await deliveries(infernet_consumer)) == 2
    assert await node_tx_count(anvil_w3, anvil_accounts[1].address) == 2
    # Log lines about a subscription carry its id.
    delivered = [r for r in node.records() if "delivered in" in r["message"]]
    assert {r.get("subscription_id") for r in delivered} == {sub_id, chained_id}


async def _at_least(probe: Any, count: int) -> Any:
    found = await probe
    return found if len(found) >= count else None


async def test_subscriptions_created_before_the_node_started_are_synced_in_batches(
    anvil_w3: Any, anvil_accounts: list[Any], infernet_consumer: Any, chain_node: Any
) -> None:
    sender = anvil_accounts[0].address
    ids = [await create_callback(infernet_consumer, sender, ["echo"], bytes([i])) for i in range(5)]
    chain_node(snapshot_sync={"batch_size": 2}).start()
    found = await wait_until(lambda: _at_least(deliveries(infernet_consumer), 5), what="five deliveries")
    assert sorted(d.subscription_id for d in found) == ids
    await asyncio.sleep(0.5)
    assert len(await deliveries(infernet_consumer)) == 5
    # Five deliveries ran at once; the wallet gave their transactions consecutive nonces.
    assert await node_tx_count(anvil_w3, anvil_accounts[1].address) == 5


async def test_recurring_subscription_is_delivered_once_per_interval_for_its_frequency(
    anvil_w3: Any, anvil_accounts: list[Any], infernet_consumer: Any, chain_node: Any
) -> None:
    node = chain_node().start()
    sub_id = await create_recurring(
        infernet_consumer, anvil_accounts[0].address, ["echo"], frequency=3, period=PERIOD, inputs=b"tick"
    )
    await asyncio.sleep(0.5)
    assert await deliveries(infernet_consumer) == [], "delivered before the subscription was active"

    for interval in (1, 2, 3):
        await increase_time(anvil_w3, PERIOD)
        found = await wait_until(
            lambda n=interval: _at_least(deliveries(infernet_consumer), n),  # type: ignore[misc]
            what=f"interval {interval}",
        )
        assert [d.interval for d in found] == list(range(1, interval + 1))

    await increase_time(anvil_w3, PERIOD)  # interval 4 > frequency: nothing more
    await asyncio.sleep(1.0)
    found = await deliveries(infernet_consumer)
    assert [(d.subscription_id, d.interval) for d in found] == [(sub_id, 1), (sub_id, 2), (sub_id, 3)]
    assert await node_tx_count(anvil_w3, anvil_accounts[1].address) == 3
    assert any("no longer tracked: completed" in r["message"] for r in node.records())


async def test_cancelled_subscription_is_not_delivered(
    anvil_w3: Any, anvil_accounts: list[Any], infernet_consumer: Any, chain_node: Any
) -> None:
    node = chain_node().start()
    sender = anvil_accounts[0].address
    # Cancelled after its first interval was delivered...
    running = await create_recurring(infernet_consumer, sender, ["echo"], frequency=3, period=PERIOD)
    # ...and cancelled before it ever became active.
    never = await create_recurring(infernet_consumer, sender, ["echo"], frequency=3, period=PERIOD)
    # Cancelled once the node tracks it (the listener skips subscriptions it finds cancelled already).
    await wait_until(lambda: _any_record(node, "tracking subscription", never), what="the node to track it")
    await increase_time(anvil_w3, PERIOD - 30)
    await cancel_subscription(infernet_consumer, sender, never)
    await increase_time(anvil_w3, 30)
    await wait_until(lambda: deliveries(infernet_consumer), what="interval 1")

    await cancel_subscription(infernet_consumer, sender, running)
    await increase_time(anvil_w3, PERIOD)
    await increase_time(anvil_w3, PERIOD)
    await asyncio.sleep(1.0)
    found = await deliveries(infernet_consumer)
    assert [(d.subscription_id, d.interval) for d in found] == [(running, 1)]
    cancelled = {r.get("subscription_id") for r in node.records() if "no longer tracked: cancelled" in r["message"]}
    assert cancelled == {running, never}


async def test_redundancy_met_by_another_node_is_not_delivered_again(
    anvil_w3: Any, anvil_accounts: list[Any], infernet_chain: Any, infernet_consumer: Any, chain_node: Any
) -> None:
    node = chain_node().start()
    sender, other_node = anvil_accounts[0].address, anvil_accounts[2].address
    coordinator = infernet_chain.coordinator

    # A callback another node answers in the very block that creates it: the listener finds it
    # with its redundancy met.
    await rpc(anvil_w3, "evm_setAutomine", [False])
    try:
        first_id = await coordinator.functions.id().call()
        create = await infernet_consumer.functions.requestCallback("echo", b"", 1).transact(
            {"from": sender, "gas": 1_000_000}
        )
        answer = await coordinator.functions.deliverCompute(first_id, 1, b"", b"other", b"", ZERO_ADDRESS).transact(
            {"from": other_node, "gas": 1_000_000}
        )
        await rpc(anvil_w3, "evm_mine")
    finally:
        await rpc(anvil_w3, "evm_setAutomine", [True])
    for tx in (create, answer):
        assert (await anvil_w3.eth.get_transaction_receipt(tx))["status"] == 1

    # A recurring one whose first interval another node answers as soon as it is active: the
    # processor finds the redundancy met when the interval comes due.
    recurring = await create_recurring(infernet_consumer, sender, ["echo"], frequency=2, period=PERIOD)
    await rpc(anvil_w3, "evm_setAutomine", [False])
    try:
        await rpc(anvil_w3, "evm_increaseTime", [PERIOD])
        answer = await coordinator.functions.deliverCompute(recurring, 1, b"", b"other", b"", ZERO_ADDRESS).transact(
            {"from": other_node, "gas": 1_000_000}
        )
        await rpc(anvil_w3, "evm_mine")
    finally:
        await rpc(anvil_w3, "evm_setAutomine", [True])
    assert (await anvil_w3.eth.get_transaction_receipt(answer))["status"] == 1
    await wait_until(lambda: _any_record(node, "redundancy met", recurring), what="the node to see interval 1 answered")
    await increase_time(anvil_w3, PERIOD)  # interval 2 is this node's
    found = await wait_until(lambda: _at_least(deliveries(infernet_consumer), 3), what="interval 2")

    assert [(d.subscription_id, d.interval, d.node) for d in found] == [
        (first_id, 1, other_node),
        (recurring, 1, other_node),
        (recurring, 2, anvil_accounts[1].address),
    ]
    await asyncio.sleep(0.5)
    assert len(await deliveries(infernet_consumer)) == 3
    # Not even a failed attempt: the node sent exactly one transaction.
    assert await node_tx_count(anvil_w3, anvil_accounts[1].address) == 1


async def _any_record(node: Any, text: str, subscription_id: int) -> bool:
    return any(text in r["message"] and r.get("subscription_id") == subscription_id for r in node.records())


async def test_allowed_addresses_are_honoured(
    anvil_w3: Any,
    anvil_accounts: list[Any],
    infernet_chain: Any,
    infernet_consumer: Any,
    chain_node: Any,
    echo_service: str,
) -> None:
    deployer = anvil_accounts[0].address
    stranger = await deploy_consumer(anvil_w3, deployer, infernet_chain.coordinator_address, anvil_accounts[9].address)
    node = chain_node(
        containers=[{"id": "restricted", "url": echo_service, "allowed_addresses": [infernet_consumer.address.lower()]}]
    ).start()
    refused = await create_callback(stranger, deployer, ["restricted"], b"no")
    not_external = await create_callback(infernet_consumer, deployer, ["inner"], b"no")
    unknown = await create_callback(infernet_consumer, deployer, ["nobody-serves-this"], b"no")
    allowed = await create_callback(infernet_consumer, deployer, ["restricted"], b"yes")

    found = await wait_until(lambda: deliveries(infernet_consumer), what="the allowed delivery")
    assert [(d.subscription_id, decode_string(d.output)) for d in found] == [(allowed, b"yes".hex())]
    # Each refusal is logged when the listener reads the subscription; wait for all three rather
    # than assume they were written by the time the allowed one was delivered.
    expected = {
        refused: "Container not allowed for address",
        not_external: "First container must be external",
        unknown: "Container-set not supported",
    }

    async def refusals() -> dict[int, str]:
        found = {r.get("subscription_id"): r["message"] for r in node.records() if "not served" in r["message"]}
        return found if set(expected) <= set(found) else {}

    try:
        reasons = await wait_until(refusals, what="the three refusals in the node's log")
    except AssertionError as error:
        lines = [r["message"] for r in node.records() if "subscription" in r["message"]]
        raise AssertionError(f"{error}; the node's subscription lines: {lines}") from None
    await asyncio.sleep(0.5)
    assert await deliveries(stranger) == []
    assert len(await deliveries(infernet_consumer)) == 1
    assert all(reason in reasons[sub_id] for sub_id, reason in expected.items()), reasons


async def test_failed_deliveries_are_retried_a_bounded_number_of_times(
    anvil_w3: Any, anvil_accounts: list[Any], infernet_consumer: Any, chain_node: Any
) -> None:
    sender = anvil_accounts[0].address
    await transact(infernet_consumer.functions.setRejectDeliveries(True), sender)
    node = chain_node().start()
    sub_id = await create_callback(infernet_consumer, sender, ["echo"], b"x")
    await wait_until(
        lambda: _any_record(node, "giving up after 3 failed attempts", sub_id), timeout=30, what="the node to give up"
    )
    attempts = [r for r in node.records() if "attempt" in r["message"] and r.get("subscription_id") == sub_id]
    counted = [r["message"].split("attempt ")[1][:6] for r in attempts if "failed:" in r["message"]]
    assert counted == ["1 of 3", "2 of 3"]
    await transact(infernet_consumer.functions.setRejectDeliveries(False), sender)
    await asyncio.sleep(1.0)
    assert await deliveries(infernet_consumer) == []
    # The simulation caught every failure: no transaction was wasted.
    assert await node_tx_count(anvil_w3, anvil_accounts[1].address) == 0


async def test_reverted_transactions_are_retried_at_most_three_times(
    anvil_w3: Any, anvil_accounts: list[Any], infernet_consumer: Any, chain_node: Any
) -> None:
    sender = anvil_accounts[0].address
    await transact(infernet_consumer.functions.setRejectDeliveries(True), sender)
    # The consumer's DeliveryRejected() (0x2592f163) is tolerated in simulation, so the node sends
    # transactions that revert on chain: each counts as a failed attempt.
    node = chain_node(wallet={"allowed_sim_errors": ["0x2592F163"], "max_gas_limit": 600_000}).start()
    sub_id = await create_callback(infernet_consumer, sender, ["echo"], b"x")
    await wait_until(
        lambda: _any_record(node, "giving up after 3 failed attempts", sub_id), timeout=30, what="the node to give up"
    )
    failures = [
        r["message"] for r in node.records() if r.get("subscription_id") == sub_id and "failed:" in r["message"]
    ]
    assert len(failures) == 2 and all("reverted" in message for message in failures)
    await asyncio.sleep(1.0)
    assert await deliveries(infernet_consumer) == []
    assert await node_tx_count(anvil_w3, anvil_accounts[1].address) == 3
    receipts = [
        await anvil_w3.eth.get_transaction_receipt(
            (await anvil_w3.eth.get_block(number, full_transactions=True))["transactions"][0]["hash"]
        )
        for number in range(await anvil_w3.eth.block_number - 2, await anvil_w3.eth.block_number + 1)
    ]
    assert [(r["from"], r["status"], r["gasUsed"] <= 600_000) for r in receipts] == [
        (anvil_accounts[1].address, 0, True)
    ] * 3


async def test_a_consumer_that_decodes_its_output_is_delivered_to(
    anvil_w3: Any, anvil_accounts: list[Any], infernet_chain: Any, chain_node: Any
) -> None:
    """PromptConsumer abi.decodes `output` as (bytes, bytes), so the empty placeholder the node
    simulates first reverts in the consumer: that must not stop the real delivery."""
    asker, node_address = anvil_accounts[0].address, anvil_accounts[1].address
    with service_process("slow", env={"DELIVERY_SHAPE": "1"}) as shaped:
        chain_node(containers=[{"id": "shaped", "url": shaped, "external": True}]).start()
        consumer = await deploy(anvil_w3, "PromptConsumer", infernet_chain.coordinator_address, sender=asker)
        sub_id = await infernet_chain.coordinator.functions.id().call()
        await transact(consumer.functions.ask("shaped", "hi"), asker)

        async def answered() -> bool:
            return bool(await consumer.functions.answeredBy(sub_id).call() != ZERO_ADDRESS)

        await wait_until(answered, what="the delivery")
    # The service returned the input's hex as raw_output: the consumer kept those bytes.
    assert (await consumer.functions.answers(sub_id).call()).encode() == abi_encode(["string"], ["hi"])
    assert await consumer.functions.answeredBy(sub_id).call() == node_address
    assert await node_tx_count(anvil_w3, node_address) == 1
