"""Delegated subscriptions: the real `infernet-client sub` CLI against a node on anvil."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from eth_abi import encode
from eth_utils import keccak

from tests.e2e.chain.helpers import Delegation, SubCli, decode_string, deliveries, node_tx_count, wait_until
from tests.support.chain import ZERO_ADDRESS, containers_hash, latest_timestamp

pytestmark = [pytest.mark.chain, pytest.mark.asyncio(loop_scope="session")]


async def test_cli_delegated_subscription_is_created_and_delivered(
    anvil_w3: Any,
    anvil_accounts: list[Any],
    infernet_chain: Any,
    infernet_consumer: Any,
    chain_node: Any,
    delegation: Delegation,
    sub_cli: SubCli,
) -> None:
    node = chain_node().start()
    result = await sub_cli(node, nonce=11, data={"input": "hi from the CLI"})
    assert result.returncode == 0, result.describe()
    assert "Success: Subscription created." in result.stdout

    found = await wait_until(lambda: deliveries(infernet_consumer), what="the delegated delivery")
    key = keccak(encode(["address", "uint32"], [delegation.owner, 11]))
    created = await infernet_chain.coordinator.functions.delegateCreatedIds(key).call()
    assert created > 0
    assert [(d.subscription_id, d.interval, d.node) for d in found] == [(created, 1, anvil_accounts[1].address)]
    # The off-chain input went through the echo service; delivered as abi.encode(string(output)).
    assert decode_string(found[0].output) == str({"input": "hi from the CLI"})
    # Created on chain exactly as signed.
    sub = await infernet_chain.coordinator.functions.getSubscription(created).call()
    assert sub[0] == infernet_consumer.address and "0x" + sub[5].hex() == containers_hash(["echo"])

    await asyncio.sleep(1.0)  # the listener now sees the new id too: it must not deliver again
    assert len(await deliveries(infernet_consumer)) == 1
    assert await node_tx_count(anvil_w3, anvil_accounts[1].address) == 1


async def test_cli_expired_delegated_subscription_gets_405_signature_expired(
    anvil_w3: Any, chain_node: Any, delegation: Delegation, sub_cli: SubCli
) -> None:
    node = chain_node().start()
    expiry = await latest_timestamp(anvil_w3) - 60
    result = await sub_cli(node, nonce=1, expiry=expiry, data={"input": "late"})
    assert result.returncode == 1, result.describe()
    assert "APIError: [405] Signature expired" in result.stderr, result.describe()
    # And straight over HTTP: a JSON 405 with JSON-safe params, never a 500.
    status, answer = node.post("/api/jobs", delegation.body(2, expiry=expiry))
    assert status == 405 and answer["error"] == "Signature expired"
    assert answer["params"]["expiry"] == expiry


async def test_delegated_subscription_inside_a_batch_is_delivered(
    infernet_consumer: Any, chain_node: Any, delegation: Delegation
) -> None:
    node = chain_node().start()
    body = delegation.body(3, ["echo", "inner"], data={"input": "batched"})
    status, answers = node.post("/api/jobs/batch", [{"containers": ["echo"], "data": {"x": 1}}, body])
    assert status == 200 and answers[1] == {} and "id" in answers[0]
    found = await wait_until(lambda: deliveries(infernet_consumer), what="the delivery")
    assert decode_string(found[0].output) == str({"input": "batched"})


async def test_delegated_subscriptions_the_guardian_refuses_get_405_json(
    anvil_accounts: list[Any], infernet_consumer: Any, chain_node: Any, delegation: Delegation, echo_service: str
) -> None:
    node = chain_node(
        containers=[
            {"id": "picky", "url": echo_service, "allowed_delegate_addresses": [ZERO_ADDRESS.replace("0x0", "0x1")]},
            {"id": "open", "url": echo_service, "allowed_delegate_addresses": [infernet_consumer.address.lower()]},
        ]
    ).start()
    unknown_hash = containers_hash(["nobody"])
    cases = [
        (delegation.body(1, ["nobody"]), "Container-set not supported", {"containers_hash": unknown_hash}),
        (delegation.body(2, ["inner"]), "First container must be external", {"first_container": "inner"}),
        (
            delegation.body(3, ["echo"], verifier=anvil_accounts[3].address),
            "Container does not generate proof",
            {"container": "echo"},
        ),
        (
            delegation.body(4, ["picky"]),
            "Container not allowed for address",
            {"container": "picky", "address": infernet_consumer.address},
        ),
    ]
    for request, error, params in cases:
        status, answer = node.post("/api/jobs", request)
        assert (status, answer) == (405, {"error": error, "params": params})
    # In a batch, each refusal is that item's answer.
    status, answers = node.post("/api/jobs/batch", [case[0] for case in cases])
    assert status == 200 and [a["error"] for a in answers] == [case[1] for case in cases]
    # The allow-list compares addresses case-insensitively.
    status, answer = node.post("/api/jobs", delegation.body(5, ["open"]))
    assert (status, answer) == (200, {})
    await wait_until(lambda: deliveries(infernet_consumer), what="the allowed delivery")


async def test_info_counts_a_delivery_under_way_as_pending_onchain(
    anvil_accounts: list[Any], infernet_consumer: Any, chain_node: Any, delegation: Delegation
) -> None:
    node = chain_node().start()
    info = node.info()
    # "role": a single node leads its wallet once it has taken the lease (docs: "Several nodes").
    assert info["chain"].pop("role") in {"standby", "taking_over", "leader"}
    assert info["chain"] == {"enabled": True, "address": anvil_accounts[1].address}
    assert info["pending"]["onchain"] == 0
    assert node.post("/api/jobs", delegation.body(1, ["slow"], data={"sleep": 1.5})) == (200, {})

    async def pending() -> int:
        return int(node.info()["pending"]["onchain"])

    assert await wait_until(pending, what="pending.onchain to count the delivery") == 1
    await wait_until(lambda: deliveries(infernet_consumer), what="the delivery")

    async def settled() -> bool:
        return await pending() == 0

    await wait_until(settled, what="pending.onchain back to 0")


async def test_two_nodes_serve_one_delegated_subscription_with_redundancy_two(
    anvil_accounts: list[Any], infernet_consumer: Any, chain_node: Any, delegation: Delegation, echo_service: str
) -> None:
    """The client posts the same signed subscription to each node; whichever comes second finds it
    created already (delegateCreatedIds) and still delivers its own answer, from the request's data.

    The container serves the consumer only through delegation (`allowed_addresses` names someone
    else), so the second node cannot answer through the on-chain path (with on-chain inputs) first."""
    guarded = [{"id": "guarded", "url": echo_service, "allowed_addresses": ["0x" + "11" * 20]}]
    first = chain_node(key_index=1, name="first", containers=guarded).start()
    second = chain_node(key_index=2, name="second", containers=guarded).start()
    body = delegation.body(4, ["guarded"], redundancy=2, data={"input": "twice"})
    assert first.post("/api/jobs", body) == (200, {})
    await wait_until(lambda: deliveries(infernet_consumer), what="the first delivery")
    assert second.post("/api/jobs", body) == (200, {})

    async def both() -> Any:
        found = await deliveries(infernet_consumer)
        return found if len(found) == 2 else None

    found = await wait_until(both, what="the second delivery")
    assert len({d.subscription_id for d in found}) == 1
    assert [(d.interval, d.redundancy, d.node) for d in found] == [
        (1, 1, anvil_accounts[1].address),
        (1, 2, anvil_accounts[2].address),
    ]
    assert {decode_string(d.output) for d in found} == {str({"input": "twice"})}
    # The second node ran it knowing the subscription's on-chain id already.
    assert any("(id " in r["message"] and "running guarded" in r["message"] for r in second.records())
    await asyncio.sleep(1.0)
    assert len(await deliveries(infernet_consumer)) == 2
