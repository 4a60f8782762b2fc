"""Delegated subscriptions: the real `infernet-client sub` CLI against a node on anvil."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.chain.helpers import decode_string, deliveries, node_tx_count, wait_until
from tests.support.chain import (
    ZERO_ADDRESS,
    containers_hash,
    latest_timestamp,
    sign_delegate_subscription,
)
from tests.support.client import run_cli, subscription_params

pytestmark = [pytest.mark.chain, pytest.mark.asyncio(loop_scope="session")]


def _write_sub_files(
    directory: Path, key: str, owner: str, containers: list[str], data: Any, **params: Any
) -> dict[str, Path]:
    files = {"key": directory / "key.txt", "params": directory / "params.json", "input": directory / "input.json"}
    files["key"].write_text(key + "\n")
    files["params"].write_text(
        json.dumps(
            subscription_params(
                containers, owner=owner, active_at=0, period=0, frequency=1, redundancy=1, **params
            )
        )
    )
    files["input"].write_text(json.dumps(data))
    return files


def _sub_cli(node_url: str, rpc_url: str, coordinator: str, files: dict[str, Path], expiry: int, nonce: int) -> Any:
    return run_cli(
        "sub",
        "--url", node_url,
        "--rpc-url", rpc_url,
        "--address", coordinator,
        "--expiry", str(expiry),
        "--params", str(files["params"]),
        "--key", str(files["key"]),
        "-i", str(files["input"]),
        "--nonce", str(nonce),
    )  # fmt: skip


async def test_cli_delegated_subscription_is_created_and_delivered(
    client_venv: Path,
    anvil: Any,
    anvil_w3: Any,
    anvil_accounts: list[Any],
    infernet_chain: Any,
    infernet_consumer: Any,
    chain_node: Any,
    tmp_path: Path,
) -> None:
    node = chain_node().start()
    signer = anvil_accounts[9]  # the consumer's getSigner()
    files = _write_sub_files(
        tmp_path, signer.key.to_0x_hex(), infernet_consumer.address, ["echo"], {"input": "hi from the CLI"}
    )
    expiry = await latest_timestamp(anvil_w3) + 600
    result = await asyncio.to_thread(
        _sub_cli, node.url, anvil.url, infernet_chain.coordinator_address, files, expiry, 11
    )
    assert result.returncode == 0, result.describe()
    assert "Success: Subscription created." in result.stdout

    found = await wait_until(lambda: deliveries(infernet_consumer), what="the delegated delivery")
    key = await _delegate_key(infernet_chain, infernet_consumer.address, 11)
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


async def _delegate_key(infernet_chain: Any, owner: str, nonce: int) -> bytes:
    from eth_abi import encode
    from eth_utils import keccak

    return keccak(encode(["address", "uint32"], [owner, nonce]))


async def test_cli_expired_delegated_subscription_gets_405_signature_expired(
    client_venv: Path,
    anvil: Any,
    anvil_w3: Any,
    anvil_accounts: list[Any],
    infernet_chain: Any,
    infernet_consumer: Any,
    chain_node: Any,
    tmp_path: Path,
) -> None:
    node = chain_node().start()
    files = _write_sub_files(
        tmp_path, anvil_accounts[9].key.to_0x_hex(), infernet_consumer.address, ["echo"], {"input": "late"}
    )
    expiry = await latest_timestamp(anvil_w3) - 60
    result = await asyncio.to_thread(
        _sub_cli, node.url, anvil.url, infernet_chain.coordinator_address, files, expiry, 1
    )
    assert result.returncode == 1, result.describe()
    assert "APIError: [405] Signature expired" in result.stderr, result.describe()
    # And straight over HTTP: a JSON 405 with JSON-safe params, never a 500.
    body = sign_delegate_subscription(
        anvil_accounts[9].key,
        chain_id=infernet_chain.chain_id,
        coordinator=infernet_chain.coordinator_address,
        owner=infernet_consumer.address,
        nonce=2,
        expiry=expiry,
        containers=["echo"],
    )
    status, answer = node.post("/api/jobs", body)
    assert status == 405 and answer["error"] == "Signature expired"
    assert answer["params"]["expiry"] == expiry


async def test_cli_wrong_signer_is_not_delivered_and_the_log_says_why(
    client_venv: Path,
    anvil: Any,
    anvil_w3: Any,
    anvil_accounts: list[Any],
    infernet_chain: Any,
    infernet_consumer: Any,
    chain_node: Any,
    tmp_path: Path,
) -> None:
    node = chain_node().start()
    impostor = anvil_accounts[8]
    files = _write_sub_files(
        tmp_path, impostor.key.to_0x_hex(), infernet_consumer.address, ["echo"], {"input": "forged"}
    )
    expiry = await latest_timestamp(anvil_w3) + 600
    result = await asyncio.to_thread(
        _sub_cli, node.url, anvil.url, infernet_chain.coordinator_address, files, expiry, 5
    )
    # Like the reference node, the client is not told: the signature is judged after the answer.
    assert result.returncode == 0, result.describe()

    def mismatch() -> list[dict[str, Any]]:
        return [r for r in node.records() if "signer mismatch" in r["message"]]

    async def logged() -> list[dict[str, Any]]:
        return mismatch()

    (record,) = await wait_until(logged, what="the node to log the mismatch")
    assert impostor.address in record["message"] and anvil_accounts[9].address in record["message"]
    assert record["level"] == "WARNING" and record["subscription_id"] == f"del:{infernet_consumer.address.lower()}:5"
    await asyncio.sleep(1.0)
    assert await deliveries(infernet_consumer) == []
    assert await node_tx_count(anvil_w3, anvil_accounts[1].address) == 0
    node_key = anvil_accounts[1].key.hex().removeprefix("0x")
    assert node_key not in node.log_path.read_text() and node_key not in node.log_text()


async def test_delegated_subscription_inside_a_batch_is_delivered(
    anvil_w3: Any, anvil_accounts: list[Any], infernet_chain: Any, infernet_consumer: Any, chain_node: Any
) -> None:
    node = chain_node().start()
    body = sign_delegate_subscription(
        anvil_accounts[9].key,
        chain_id=infernet_chain.chain_id,
        coordinator=infernet_chain.coordinator_address,
        owner=infernet_consumer.address,
        nonce=3,
        expiry=await latest_timestamp(anvil_w3) + 600,
        containers=["echo", "inner"],
        data={"input": "batched"},
    )
    status, answers = node.post("/api/jobs/batch", [{"containers": ["echo"], "data": {"x": 1}}, body])
    assert status == 200 and answers[1] == {} and "id" in answers[0]
    found = await wait_until(lambda: deliveries(infernet_consumer), what="the delivery")
    assert decode_string(found[0].output) == str({"input": "batched"})


async def test_delegated_subscriptions_the_guardian_refuses_get_405_json(
    anvil_w3: Any,
    anvil_accounts: list[Any],
    infernet_chain: Any,
    infernet_consumer: Any,
    chain_node: Any,
    echo_service: str,
) -> None:
    node = chain_node(
        containers=[
            {"id": "picky", "url": echo_service, "allowed_delegate_addresses": [ZERO_ADDRESS.replace("0x0", "0x1")]},
            {"id": "open", "url": echo_service, "allowed_delegate_addresses": [infernet_consumer.address.lower()]},
        ]
    ).start()
    expiry = await latest_timestamp(anvil_w3) + 600

    def body(containers: Any, nonce: int, **extra: Any) -> dict[str, Any]:
        return sign_delegate_subscription(
            anvil_accounts[9].key,
            chain_id=infernet_chain.chain_id,
            coordinator=infernet_chain.coordinator_address,
            owner=infernet_consumer.address,
            nonce=nonce,
            expiry=expiry,
            containers=containers,
            **extra,
        )

    unknown_hash = containers_hash(["nobody"])
    cases = [
        (body(["nobody"], 1), "Container-set not supported", {"containers_hash": unknown_hash}),
        (body(["inner"], 2), "First container must be external", {"first_container": "inner"}),
        (
            body(["echo"], 3, verifier=anvil_accounts[3].address),
            "Container does not generate proof",
            {"container": "echo"},
        ),
        (
            body(["picky"], 4),
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
    status, answer = node.post("/api/jobs", body(["open"], 5))
    assert (status, answer) == (200, {})
    await wait_until(lambda: deliveries(infernet_consumer), what="the allowed delivery")


async def test_info_counts_a_delivery_under_way_as_pending_onchain(
    anvil_w3: Any, anvil_accounts: list[Any], infernet_chain: Any, infernet_consumer: Any, chain_node: Any
) -> None:
    node = chain_node().start()
    info = node.info()
    assert info["chain"] == {"enabled": True, "address": anvil_accounts[1].address}
    assert info["pending"]["onchain"] == 0
    body = sign_delegate_subscription(
        anvil_accounts[9].key,
        chain_id=infernet_chain.chain_id,
        coordinator=infernet_chain.coordinator_address,
        owner=infernet_consumer.address,
        nonce=1,
        expiry=await latest_timestamp(anvil_w3) + 600,
        containers=["slow"],
        data={"sleep": 1.5},
    )
    assert node.post("/api/jobs", body) == (200, {})

    async def pending() -> int:
        return int(node.info()["pending"]["onchain"])

    assert await wait_until(pending, what="pending.onchain to count the delivery") == 1
    await wait_until(lambda: deliveries(infernet_consumer), what="the delivery")

    async def settled() -> bool:
        return await pending() == 0

    await wait_until(settled, what="pending.onchain back to 0")


async def test_two_nodes_serve_one_delegated_subscription_with_redundancy_two(
    anvil_w3: Any,
    anvil_accounts: list[Any],
    infernet_chain: Any,
    infernet_consumer: Any,
    chain_node: Any,
    echo_service: str,
) -> None:
    """The client posts the same signed subscription to each node; whichever comes second finds it
    created already (delegateCreatedIds) and still delivers its own answer, from the request's data.

    The container serves the consumer only through delegation (`allowed_addresses` names someone
    else), so the second node cannot answer through the on-chain path (with on-chain inputs) first."""
    guarded = [{"id": "guarded", "url": echo_service, "allowed_addresses": ["0x" + "11" * 20]}]
    first = chain_node(key_index=1, name="first", containers=guarded).start()
    second = chain_node(key_index=2, name="second", containers=guarded).start()
    body = sign_delegate_subscription(
        anvil_accounts[9].key,
        chain_id=infernet_chain.chain_id,
        coordinator=infernet_chain.coordinator_address,
        owner=infernet_consumer.address,
        nonce=4,
        expiry=await latest_timestamp(anvil_w3) + 600,
        containers=["guarded"],
        redundancy=2,
        data={"input": "twice"},
    )
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
