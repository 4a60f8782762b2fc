"""On-chain subscriptions: found by the listener, run through real services, delivered on anvil."""

from __future__ import annotations

from typing import Any

import pytest

from tests.chain.helpers import decode_string, deliveries, wait_until
from tests.support.chain import create_callback

pytestmark = [pytest.mark.chain, pytest.mark.asyncio(loop_scope="session")]


async def test_callback_is_delivered_once_with_the_service_output(
    anvil_w3: Any, anvil_accounts: list[Any], infernet_consumer: Any, chain_node: Any
) -> None:
    node = chain_node().start()
    sender = anvil_accounts[0].address
    sub_id = await create_callback(infernet_consumer, sender, ["echo"], b"hello chain")

    found = await wait_until(lambda: deliveries(infernet_consumer), what="the delivery")
    assert len(found) == 1
    delivery = found[0]
    assert delivery.subscription_id == sub_id and delivery.interval == 1
    assert delivery.node == anvil_accounts[1].address
    # The echo service returned its input, the hex of the consumer's inputs; the node
    # delivers abi.encode(string) of it.
    assert decode_string(delivery.output) == b"hello chain".hex()
    assert delivery.input == b"" and delivery.proof == b""
