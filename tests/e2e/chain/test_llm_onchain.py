"""A prompt on chain: a PromptConsumer asks the real llm container (Docker) through the real node
on anvil, and the model's answer is delivered on chain.

The container runs with host networking on a free 127.0.0.1 port (built or refreshed by
scripts/provision.sh first); the node reaches it as an external container. Without a Docker
daemon the test skips locally and fails in CI (tests/support/requirements.py).
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from eth_abi import encode as abi_encode

from tests.e2e.chain.helpers import node_tx_count, wait_until
from tests.support.chain import ZERO_ADDRESS, deploy, transact
from tests.support.requirements import unavailable

pytestmark = [pytest.mark.chain, pytest.mark.docker, pytest.mark.asyncio(loop_scope="session")]

REPO_ROOT = Path(__file__).resolve().parents[3]
IMAGE = "infernet-local/llm:latest"
# Smaller than the image's default (64), so the test is quick and shows the setting is honoured.
ONCHAIN_MAX_TOKENS = 24
PROMPT = "What is the capital of France?"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _logs(name: str) -> str:
    logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True, timeout=30)
    return logs.stdout + logs.stderr


@pytest.fixture(scope="module")
def llm_url() -> Iterator[str]:
    """The llm image in a container of this module's: its URL on loopback."""
    try:
        info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=20)
    except (FileNotFoundError, subprocess.TimeoutExpired) as error:
        unavailable(f"no Docker daemon: {error}")
    if info.returncode != 0:
        unavailable(f"no Docker daemon: {info.stderr.strip()[-300:]} (run scripts/provision.sh)")
    built = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "provision.sh")], capture_output=True, text=True, timeout=2400
    )
    if built.returncode != 0:
        raise RuntimeError(f"scripts/provision.sh failed:\n{built.stdout}\n{built.stderr}")
    port = _free_port()
    name = f"infernet-test-llm-chain-{port}"
    url = f"http://127.0.0.1:{port}"
    subprocess.run(
        ["docker", "run", "-d", "--name", name, "--network", "host", "-e", f"PORT={port}", "-e", "HOST=127.0.0.1",
         "-e", "N_THREADS=1", "-e", f"ONCHAIN_MAX_TOKENS={ONCHAIN_MAX_TOKENS}", IMAGE],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _healthy(url):
            if time.monotonic() > deadline:
                raise TimeoutError(f"llm /health did not answer 200 within 60 s:\n{_logs(name)}")
            time.sleep(0.1)
        yield url
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)


async def _direct_answer(url: str, prompt: str) -> str:
    """What the container answers to the same question asked off chain as a chat request."""
    body = {
        "source": 1,
        "destination": 1,
        "requires_proof": False,
        "data": {"messages": [{"role": "user", "content": prompt}], "temperature": 0,
                 "max_tokens": ONCHAIN_MAX_TOKENS},
    }  # fmt: skip
    async with aiohttp.ClientSession() as session, session.post(f"{url}/service_output", json=body) as response:
        answer = await response.json()
        assert response.status == 200, answer
    return str(answer["choices"][0]["message"]["content"])


async def test_a_prompt_asked_on_chain_gets_the_models_answer_delivered_once(
    anvil_w3: Any, anvil_accounts: list[Any], infernet_chain: Any, chain_node: Any, llm_url: str
) -> None:
    asker, node_address = anvil_accounts[0].address, anvil_accounts[1].address
    node = chain_node(containers=[{"id": "llm", "url": llm_url, "external": True}]).start()
    consumer = await deploy(anvil_w3, "PromptConsumer", infernet_chain.coordinator_address, sender=asker)
    sub_id = await infernet_chain.coordinator.functions.id().call()
    asked = await transact(consumer.functions.ask("llm", PROMPT), asker)

    async def answered() -> bool:
        return bool(await consumer.functions.answeredBy(sub_id).call() != ZERO_ADDRESS)

    await wait_until(answered, timeout=180, interval=0.5, what="the model's answer on chain")
    expected = await _direct_answer(llm_url, PROMPT)
    assert expected.strip(), "the model answered nothing"

    answer = await consumer.functions.answers(sub_id).call()
    assert answer.encode() == expected.encode()
    assert await consumer.functions.answeredBy(sub_id).call() == node_address
    # The transaction carried exactly abi.encode(bytes answer, bytes "") as deliverCompute's output.
    await asyncio.sleep(1.0)  # give a duplicate every chance to appear
    events = await consumer.events.Answered().get_logs(from_block=asked["blockNumber"])
    assert [(e["args"]["subscriptionId"], e["args"]["node"]) for e in events] == [(sub_id, node_address)]
    tx = await anvil_w3.eth.get_transaction(events[0]["transactionHash"])
    assert tx["from"] == node_address and tx["to"] == infernet_chain.coordinator_address
    function, args = infernet_chain.coordinator.decode_function_input(tx["input"])
    assert function.fn_name == "deliverCompute"
    assert (args["subscriptionId"], args["deliveryInterval"]) == (sub_id, 1)
    assert args["output"] == abi_encode(["bytes", "bytes"], [expected.encode(), b""])
    assert args["input"] == abi_encode(["bytes", "bytes"], [abi_encode(["string"], [PROMPT]), b""])
    assert args["proof"] == b""
    assert await node_tx_count(anvil_w3, node_address) == 1
    delivered = [r for r in node.records() if "delivered in" in r["message"]]
    assert [r.get("subscription_id") for r in delivered] == [sub_id]
