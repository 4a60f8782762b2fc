"""Chain deliveries are jobs of the node's queue: bounded, counted and visible like REST jobs.

A node on anvil with room for one job (`jobs.queue_size: 1`): a delivery under way fills the queue
for REST clients, shows in /info and /metrics; a delivery that finds the queue full waits for
room and is then delivered once, never dropped.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from typing import Any

import pytest

from tests.e2e.chain.helpers import ChainNode, Delegation, decode_string, deliveries, node_tx_count, wait_until

pytestmark = [pytest.mark.chain, pytest.mark.asyncio(loop_scope="session")]


def queue_pending(node: ChainNode) -> float:
    with urllib.request.urlopen(f"{node.url}/metrics", timeout=5) as response:
        text = response.read().decode()
    (line,) = [line for line in text.splitlines() if line.startswith("infernet_queue_pending ")]
    return float(line.split()[1])


async def test_a_delivery_under_way_fills_the_queue_for_rest_jobs_and_shows_as_pending(
    infernet_consumer: Any, chain_node: Any, delegation: Delegation
) -> None:
    node = chain_node(jobs={"queue_size": 1}).start()
    assert node.post("/api/jobs", delegation.body(1, ["slow"], data={"sleep": 3})) == (200, {})

    async def running() -> bool:
        return queue_pending(node) == 1

    await wait_until(running, what="the delivery's job in the queue")
    assert node.info()["pending"] == {"offchain": 0, "onchain": 1}
    status, answer = node.post("/api/jobs", {"containers": ["echo"], "data": {"x": 1}})
    assert (status, answer) == (429, {"error": "Too many jobs queued, retry later", "params": {"limit": 1}})

    await wait_until(lambda: deliveries(infernet_consumer), what="the delivery")

    async def drained() -> bool:
        return queue_pending(node) == 0

    await wait_until(drained, what="the queue to drain")
    status, answer = node.post("/api/jobs", {"containers": ["echo"], "data": {"x": 2}})
    assert status == 200 and "id" in answer


async def test_a_delivery_that_finds_the_queue_full_waits_and_is_delivered_once(
    anvil_w3: Any, anvil_accounts: list[Any], infernet_consumer: Any, chain_node: Any, delegation: Delegation
) -> None:
    node = chain_node(jobs={"queue_size": 1}).start()
    assert node.post("/api/jobs", {"containers": ["slow"], "data": {"sleep": 3}})[0] == 200
    started = time.monotonic()
    assert node.post("/api/jobs", delegation.body(1, ["echo"], data={"input": "after the REST job"})) == (200, {})

    await asyncio.sleep(1.5)  # the REST job holds the only place: nothing delivered yet
    assert await deliveries(infernet_consumer) == []
    assert node.info()["pending"] == {"offchain": 1, "onchain": 0}

    (delivery,) = await wait_until(lambda: deliveries(infernet_consumer), what="the delivery once there is room")
    assert time.monotonic() - started >= 2.5
    assert decode_string(delivery.output) == str({"input": "after the REST job"})
    await asyncio.sleep(1.0)
    assert len(await deliveries(infernet_consumer)) == 1
    assert await node_tx_count(anvil_w3, anvil_accounts[1].address) == 1
    assert node.post("/api/jobs", {"containers": ["echo"], "data": {}})[0] == 200
