"""Two node processes on one PostgreSQL store with one wallet: one sender, and failover on kill -9.

Both nodes accept delegated subscriptions and store them; only the holder of the wallet's lease
delivers. When the leader is SIGKILLed, the standby takes over once the lease expires and
delivers what comes next. Every (subscription, interval) is delivered exactly once, and the
wallet sends no transaction that reverts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.chain.helpers import ChainNode, Delegation, deliveries, node_tx_count, wait_until
from tests.support.postgres import create_database_sync, drop_database_sync, postgres_server  # noqa: F401

pytestmark = [pytest.mark.chain, pytest.mark.asyncio(loop_scope="session")]

LEASE_SECONDS = 5.0  # the defaults of cluster.lease_seconds / renew_seconds
RENEW_SECONDS = 1.5


@pytest.fixture
def shared_store(postgres_server: str) -> Iterator[str]:  # noqa: F811
    url = create_database_sync(postgres_server)
    try:
        yield url
    finally:
        drop_database_sync(postgres_server, url)


def on_store(node: ChainNode, url: str, node_id: str) -> ChainNode:
    node.config["store"] = {"url": url}
    node.config["cluster"] = {"node_id": node_id, "lease_seconds": LEASE_SECONDS, "renew_seconds": RENEW_SECONDS}
    node.config_path.write_text(json.dumps(node.config))
    return node


def sent_by(node: ChainNode) -> list[str]:
    return [r["message"] for r in node.records() if "sent transaction" in r["message"]]


async def test_one_sender_per_wallet_and_the_standby_takes_over_after_kill_9(
    anvil_w3: Any,
    anvil_accounts: list[Any],
    infernet_consumer: Any,
    chain_node: Any,
    delegation: Delegation,
    shared_store: str,
) -> None:
    first = on_store(chain_node(name="a"), shared_store, "node-a").start()

    async def role(node: ChainNode, expected: str) -> bool:
        return node.info()["chain"].get("role") == expected

    await wait_until(lambda: role(first, "leader"), what="the first node to lead")
    second = on_store(chain_node(name="b"), shared_store, "node-b").start()
    await wait_until(lambda: role(second, "standby"), what="the second node to stand by")

    async def both_alive() -> bool:
        return all(node.info()["cluster"]["nodes_alive"] == 2 for node in (first, second))

    await wait_until(both_alive, what="both heartbeats")
    info = second.info()
    assert info["cluster"]["node_id"] == "node-b"
    wallet = anvil_accounts[1].address
    assert {"lease": f"chain:{wallet.lower()}", "holder": "node-a"} in info["cluster"]["roles"]

    # Both nodes accept and store; the leader delivers all of them, whichever node took them.
    for nonce, node in enumerate([first, second, second, first], start=1):
        assert node.post("/api/jobs", delegation.body(nonce, data={"n": nonce})) == (200, {})

    async def delivered(count: int) -> list[Any]:
        found = await deliveries(infernet_consumer)
        return found if len(found) >= count else []

    await wait_until(lambda: delivered(4), timeout=30, what="four deliveries by the leader")
    assert sent_by(second) == []  # the standby never sent
    assert len(sent_by(first)) == 4

    # kill -9 the leader; a subscription arrives at the standby right away.
    first.kill()
    killed = time.monotonic()
    assert second.post("/api/jobs", delegation.body(5, data={"n": 5})) == (200, {})
    await wait_until(lambda: delivered(5), timeout=30, what="the delivery by the new leader")
    failover = time.monotonic() - killed
    print(f"\nfailover: kill -9 of the chain leader -> first delivery by the new leader: {failover:.2f}s")
    assert await role(second, "leader")
    assert len(sent_by(second)) == 1
    assert failover <= 10.0, f"failover took {failover:.1f}s"

    # The new leader keeps delivering; the dead node's heartbeat expires.
    assert second.post("/api/jobs", delegation.body(6, data={"n": 6})) == (200, {})
    found = await wait_until(lambda: delivered(6), timeout=30, what="a delivery after the failover")

    async def alone() -> bool:
        return second.info()["cluster"]["nodes_alive"] == 1

    await wait_until(alone, timeout=LEASE_SECONDS * 3, what="the dead node's heartbeat to expire")
    found = await deliveries(infernet_consumer)
    keys = [(d.subscription_id, d.interval) for d in found]
    assert len(keys) == len(set(keys)) == 6, keys  # every (subscription, interval) exactly once
    assert {d.node for d in found} == {wallet}
    # One transaction per delivery: none reverted, none sent twice.
    assert await node_tx_count(anvil_w3, wallet) == 6
    metrics = _get(second, "/metrics")
    assert "infernet_chain_leader 1.0" in metrics and "infernet_cluster_nodes_alive 1.0" in metrics


def _get(node: ChainNode, path: str) -> str:
    import urllib.request

    with urllib.request.urlopen(f"{node.url}{path}", timeout=5) as response:
        return str(response.read().decode())
