"""PromptConsumer on a real anvil: a prompt goes in as the container input, the model's text comes
back through deliverCompute's (rawOutput, processedOutput) encoding and is kept as the answer."""

from __future__ import annotations

from typing import Any

import pytest
from eth_abi.abi import encode as abi_encode
from eth_account.signers.local import LocalAccount
from web3 import AsyncWeb3
from web3.logs import DISCARD

from tests.support.chain import (
    ZERO_ADDRESS,
    InfernetDeployment,
    deploy,
    error_selector,
    expect_revert,
    latest_timestamp,
    transact,
)

pytestmark = [pytest.mark.chain, pytest.mark.asyncio(loop_scope="session")]


async def test_a_prompt_is_the_input_and_the_delivered_text_is_the_answer(
    anvil_w3: AsyncWeb3[Any],
    infernet_chain: InfernetDeployment,
    anvil_accounts: list[LocalAccount],
    chain_snapshot: str,
) -> None:
    asker, node = anvil_accounts[1].address, anvil_accounts[2].address
    consumer = await deploy(anvil_w3, "PromptConsumer", infernet_chain.coordinator.address, sender=asker)
    sub_id = await infernet_chain.coordinator.functions.id().call()
    await transact(consumer.functions.ask("llm", "What is 2+2? ünïcode"), asker)

    now = await latest_timestamp(anvil_w3)
    inputs = await consumer.functions.getContainerInputs(sub_id, 1, now, node).call()
    assert inputs == abi_encode(["string"], ["What is 2+2? ünïcode"])

    answer = "Four. ✓"
    output = abi_encode(["bytes", "bytes"], [answer.encode(), b""])
    receipt = await transact(
        infernet_chain.coordinator.functions.deliverCompute(sub_id, 1, b"", output, b"", ZERO_ADDRESS), node
    )
    events = consumer.events.Answered().process_receipt(receipt, errors=DISCARD)
    assert [(e["args"]["subscriptionId"], e["args"]["node"], e["args"]["answer"]) for e in events] == [
        (sub_id, node, answer)
    ]
    assert await consumer.functions.answers(sub_id).call() == answer
    assert await consumer.functions.answeredBy(sub_id).call() == node


async def test_only_the_coordinator_may_deliver(
    anvil_w3: AsyncWeb3[Any],
    infernet_chain: InfernetDeployment,
    anvil_accounts: list[LocalAccount],
    chain_snapshot: str,
) -> None:
    sender = anvil_accounts[1].address
    consumer = await deploy(anvil_w3, "PromptConsumer", infernet_chain.coordinator.address, sender=sender)
    output = abi_encode(["bytes", "bytes"], [b"x", b""])
    call = consumer.functions.rawReceiveCompute(1, 1, 1, ZERO_ADDRESS, b"", output, b"", b"\x00" * 32, 0)
    assert await expect_revert(call.call({"from": sender})) == error_selector("NotCoordinator")
