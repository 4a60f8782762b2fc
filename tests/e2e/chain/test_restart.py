"""Restarts between accepting and delivering: every subscription is delivered exactly once.

The node is SIGKILLed (no cleanup at all) at the worst moments: while the service runs, and
after the transaction was sent but before it was mined (anvil's automine off), then restarted
on the same store.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from tests.e2e.chain.helpers import deliveries, node_tx_count, wait_until
from tests.support.chain import latest_timestamp, rpc, sign_delegate_subscription

pytestmark = [pytest.mark.chain, pytest.mark.asyncio(loop_scope="session")]


async def _delegated_body(anvil_w3: Any, signer: Any, chain: Any, owner: str, **extra: Any) -> dict[str, Any]:
    return sign_delegate_subscription(
        signer.key,
        chain_id=chain.chain_id,
        coordinator=chain.coordinator_address,
        owner=owner,
        expiry=await latest_timestamp(anvil_w3) + 600,
        **extra,
    )


async def _kill_once_sent_then_restart(anvil_w3: Any, node: Any, node_address: str) -> None:
    """SIGKILL the node once its delivery transaction is in the mempool (not mined), restart it."""

    async def sent() -> bool:
        return await node_tx_count(anvil_w3, node_address) == 1

    await wait_until(sent, what="the delivery transaction in the mempool")
    node.kill()
    node.start()
    await asyncio.sleep(1.5)  # a node that forgot the transaction would send another by now
    assert await node_tx_count(anvil_w3, node_address) == 1


async def _mine_and_expect_one_delivery(anvil_w3: Any, consumer: Any, node_address: str) -> None:
    await rpc(anvil_w3, "evm_mine")
    found = await wait_until(lambda: deliveries(consumer), what="the delivery")
    await asyncio.sleep(1.0)
    await rpc(anvil_w3, "evm_mine")  # anything sent again would be mined by now
    assert len(await deliveries(consumer)) == len(found) == 1
    assert await node_tx_count(anvil_w3, node_address) == 1


async def test_killed_while_the_service_runs_then_restarted_delivers_once(
    anvil_w3: Any, anvil_accounts: list[Any], infernet_chain: Any, infernet_consumer: Any, chain_node: Any
) -> None:
    node = chain_node().start()
    body = await _delegated_body(
        anvil_w3, anvil_accounts[9], infernet_chain, infernet_consumer.address,
        nonce=1, containers=["slow"], data={"sleep": 2},
    )  # fmt: skip
    assert node.post("/api/jobs", body) == (200, {})

    async def running() -> bool:
        return bool(node.info()["pending"]["onchain"])

    await wait_until(running, what="the node to start the delivery")
    node.kill()  # right after the 200 {}, while the slow service works
    assert await deliveries(infernet_consumer) == []

    node.start()
    found = await wait_until(lambda: deliveries(infernet_consumer), timeout=30, what="the delivery after the restart")
    await asyncio.sleep(1.0)
    assert len(await deliveries(infernet_consumer)) == len(found) == 1
    assert await node_tx_count(anvil_w3, anvil_accounts[1].address) == 1
    assert any("resumed 1 delegated subscriptions" in r["message"] for r in node.records())


async def test_killed_after_sending_before_mining_then_restarted_sends_nothing_more(
    anvil_w3: Any,
    anvil_accounts: list[Any],
    infernet_chain: Any,
    infernet_consumer: Any,
    chain_node: Any,
    manual_mining: None,
) -> None:
    node_address = anvil_accounts[1].address
    node = chain_node().start()
    body = await _delegated_body(
        anvil_w3, anvil_accounts[9], infernet_chain, infernet_consumer.address,
        nonce=1, containers=["echo"], data={"input": "once"},
    )  # fmt: skip
    assert node.post("/api/jobs", body) == (200, {})

    await _kill_once_sent_then_restart(anvil_w3, node, node_address)
    assert await deliveries(infernet_consumer) == []
    await _mine_and_expect_one_delivery(anvil_w3, infernet_consumer, node_address)

    # The killed process's lease on the wallet outlives it (cluster.lease_seconds); the restarted
    # node takes over, and settles the stored transaction, once it expires.
    async def settled() -> bool:
        messages = [r["message"] for r in node.records()]
        return any(m.startswith("resuming: waiting for transaction") for m in messages) and any(
            "was mined: delivered" in m for m in messages
        )

    await wait_until(settled, timeout=15, what="the take-over to settle the stored transaction")
    assert await node_tx_count(anvil_w3, node_address) == 1


async def test_onchain_subscription_killed_before_mining_is_delivered_once(
    anvil_w3: Any,
    anvil_accounts: list[Any],
    infernet_consumer: Any,
    chain_node: Any,
    manual_mining: None,
) -> None:
    node_address = anvil_accounts[1].address
    node = chain_node().start()
    await infernet_consumer.functions.requestCallback("echo", b"restart", 1).transact(
        {"from": anvil_accounts[0].address, "gas": 1_000_000}
    )
    await rpc(anvil_w3, "evm_mine")

    await _kill_once_sent_then_restart(anvil_w3, node, node_address)
    await _mine_and_expect_one_delivery(anvil_w3, infernet_consumer, node_address)


async def test_graceful_stop_closes_the_chain_connection(chain_node: Any) -> None:
    node = chain_node().start()
    started = time.monotonic()
    assert node.stop() == 0
    elapsed = time.monotonic() - started
    output = node.log_text()
    assert "Unclosed client session" not in output and "Unclosed connector" not in output
    assert "Task was destroyed but it is pending" not in output
    assert elapsed < 20
