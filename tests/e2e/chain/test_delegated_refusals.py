"""Delegated subscriptions the coordinator would never take get a 400 naming why, and nothing is kept.

The reference node answers `200 {}` to these (the client prints "Success") and only logs them;
this node checks before it answers (node/chain/delegated.py). The real `infernet-client sub` and
plain HTTP, against a node on anvil.
"""

from __future__ import annotations

import asyncio
import sqlite3
from typing import Any

import pytest

from tests.e2e.chain.helpers import ChainNode, Delegation, SubCli, deliveries, node_tx_count, wait_until
from tests.support.chain import ZERO_ADDRESS, latest_timestamp, transact

pytestmark = [pytest.mark.chain, pytest.mark.asyncio(loop_scope="session")]

UINT32_MAX = 2**32 - 1
SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


def stored_delegated(node: ChainNode) -> list[tuple[Any, ...]]:
    """The node's chain_delegated rows, read from its SQLite file."""
    path = node.config["store"]["url"].removeprefix("sqlite+aiosqlite:///")
    with sqlite3.connect(path) as connection:
        rows = connection.execute("SELECT owner, nonce, status FROM chain_delegated").fetchall()
    connection.close()
    return rows


async def test_cli_wrong_signer_gets_400_signer_mismatch_and_nothing_is_stored(
    anvil_w3: Any, anvil_accounts: list[Any], infernet_consumer: Any, chain_node: Any, sub_cli: SubCli
) -> None:
    node = chain_node().start()
    impostor, signer = anvil_accounts[8], anvil_accounts[9]

    result = await sub_cli(node, nonce=5, key=impostor.key, data={"input": "forged"})

    assert result.returncode == 1, result.describe()
    assert "Success" not in result.stdout
    assert (
        f"APIError: [400] Signer mismatch - [signer={impostor.address}, owner_signer={signer.address}, "
        f"owner={infernet_consumer.address}]"
    ) in result.stderr, result.describe()
    assert stored_delegated(node) == []
    await asyncio.sleep(1.0)
    assert await deliveries(infernet_consumer) == []
    assert await node_tx_count(anvil_w3, anvil_accounts[1].address) == 0
    node_key = anvil_accounts[1].key.hex().removeprefix("0x")
    assert node_key not in node.log_path.read_text() and node_key not in node.log_text()


async def test_subscriptions_that_can_never_be_delivered_get_400_naming_the_reason(
    anvil_w3: Any, anvil_accounts: list[Any], infernet_consumer: Any, chain_node: Any, delegation: Delegation
) -> None:
    node = chain_node().start()
    now = await latest_timestamp(anvil_w3)
    impostor, stranger = anvil_accounts[8], anvil_accounts[5]
    good = delegation.body(1)
    high_s = {**good, "signature": {**good["signature"], "s": SECP256K1_ORDER - good["signature"]["s"]}}
    high_s["signature"]["v"] = 55 - good["signature"]["v"]  # the malleable twin: same signer, high s
    no_signer_owner = Delegation(delegation.chain, stranger.address, stranger, delegation.expiry)  # an EOA
    cases: list[tuple[dict[str, Any], str, dict[str, Any]]] = [
        (
            delegation.body(2, key=impostor.key),
            "Signer mismatch",
            {"signer": impostor.address, "owner_signer": delegation.signer.address, "owner": delegation.owner},
        ),
        (
            no_signer_owner.body(3),
            "Signer mismatch",
            {"signer": stranger.address, "owner_signer": ZERO_ADDRESS, "owner": stranger.address},
        ),
        (
            {**good, "signature": {**good["signature"], "v": 29}},
            "Invalid signature",
            {"reason": "unrecoverable signature: v must be 27 or 28, not 29"},
        ),
        (
            high_s,
            "Invalid signature",
            {"reason": "unrecoverable signature: s is not in the lower half of the curve order"},
        ),
        (delegation.body(4, frequency=0), "Subscription has no intervals", {"frequency": 0}),
        (delegation.body(5, redundancy=0), "Subscription allows no deliveries", {"redundancy": 0}),
        (delegation.body(6, active_at=UINT32_MAX), "Subscription is cancelled", {"active_at": UINT32_MAX}),
        (
            delegation.body(7, active_at=now - 100, period=10, frequency=3),
            "Subscription completed",
            {"frequency": 3, "interval": 11},
        ),
        (
            delegation.body(8, active_at=delegation.expiry),
            "Subscription starts after its signature expires",
            {"active_at": delegation.expiry, "expiry": delegation.expiry},
        ),
    ]
    for request, error, params in cases:
        assert node.post("/api/jobs", request) == (400, {"error": error, "params": params}), error
    # In a batch, each is that item's answer, beside a valid one.
    status, answers = node.post("/api/jobs/batch", [case[0] for case in cases] + [good])
    assert status == 200
    assert answers == [{"error": error, "params": params} for _, error, params in cases] + [{}]

    (only,) = stored_delegated(node)  # the valid one, nothing else
    assert only == (delegation.owner.lower(), 1, "tracking")
    found = await wait_until(lambda: deliveries(infernet_consumer), what="the valid delivery")
    await asyncio.sleep(1.0)
    assert len(await deliveries(infernet_consumer)) == len(found) == 1
    assert await node_tx_count(anvil_w3, anvil_accounts[1].address) == 1


async def test_a_rotated_signer_is_accepted_after_a_cached_read(
    anvil_accounts: list[Any], infernet_consumer: Any, chain_node: Any, delegation: Delegation
) -> None:
    """The owner's signer is cached; a signature by another key is checked against a fresh read
    (at most 2 s old) before it is refused, so a consumer that rotates its signer is not refused."""
    node = chain_node().start()
    old, new = delegation.signer, anvil_accounts[7]
    assert node.post("/api/jobs", delegation.body(1)) == (200, {})  # reads and caches the old signer
    await wait_until(lambda: deliveries(infernet_consumer), what="the delivery signed by the old signer")
    await transact(infernet_consumer.functions.setSigner(new.address), anvil_accounts[0].address)
    await asyncio.sleep(2.5)

    assert node.post("/api/jobs", delegation.body(2, key=new.key)) == (200, {})
    status, answer = node.post("/api/jobs", delegation.body(3, key=old.key))
    assert (status, answer["error"], answer["params"]["owner_signer"]) == (400, "Signer mismatch", new.address)

    async def both() -> Any:
        found = await deliveries(infernet_consumer)
        return found if len(found) == 2 else None

    await wait_until(both, what="the delivery signed by the new signer")
    assert [row[1] for row in sorted(stored_delegated(node))] == [1, 2]
