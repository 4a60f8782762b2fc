"""The node's chain module on a real anvil, with real node processes and real service processes.

Each test gets a chain snapshot (reverted afterwards) and starts its own node(s) with a config
pointing at the session's anvil and contracts; nodes are stopped before the snapshot is reverted.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.e2e.chain.helpers import ChainNode, Delegation, SubCli, node_chain_config
from tests.support.chain import (  # noqa: F401  (pytest finds fixtures by name)
    Anvil,
    InfernetDeployment,
    anvil,
    anvil_accounts,
    anvil_w3,
    chain_snapshot,
    infernet_chain,
    infernet_consumer,
    latest_timestamp,
    rpc,
)
from tests.support.client import (  # noqa: F401  (pytest finds fixtures by name)
    CliResult,
    client_venv,
    run_cli,
    subscription_params,
)
from tests.support.processes import echo_service, service_process  # noqa: F401

pytestmark = pytest.mark.chain


@pytest_asyncio.fixture(loop_scope="session")
async def manual_mining(anvil_w3: Any, chain_snapshot: str) -> AsyncIterator[None]:
    """Blocks are mined only when the test says so (anvil automine off) until the test ends."""
    await rpc(anvil_w3, "evm_setAutomine", [False])
    try:
        yield
    finally:
        await rpc(anvil_w3, "evm_setAutomine", [True])


@pytest.fixture(scope="session")
def slow_service() -> Iterator[str]:
    with service_process("slow") as url:
        yield url


NodeFactory = Callable[..., ChainNode]


@pytest_asyncio.fixture(loop_scope="session")
async def chain_node(
    anvil: Anvil,
    anvil_accounts: list[Any],
    infernet_chain: InfernetDeployment,
    chain_snapshot: str,
    echo_service: str,
    slow_service: str,
    tmp_path: Path,
) -> AsyncIterator[NodeFactory]:
    """Builds node processes for this test: `chain_node(key_index=1, containers=..., jobs=..., **chain)`.

    Nodes are killed at the end of the test, before the chain snapshot is reverted (a graceful
    stop is tested on its own)."""
    nodes: list[ChainNode] = []

    def make(
        *,
        key_index: int = 1,
        name: str = "node",
        containers: list[dict[str, Any]] | None = None,
        jobs: dict[str, Any] | None = None,
        **chain: Any,
    ) -> ChainNode:
        workdir = tmp_path / name
        workdir.mkdir(exist_ok=True)
        config = node_chain_config(
            workdir,
            rpc_url=anvil.url,
            registry=infernet_chain.registry_address,
            private_key=anvil_accounts[key_index].key.to_0x_hex(),
            echo_url=echo_service,
            slow_url=slow_service,
            containers=containers,
            **chain,
        )
        config["jobs"] = {**config["jobs"], **(jobs or {})}
        node = ChainNode(config, workdir)
        nodes.append(node)
        return node

    try:
        yield make
    finally:
        for node in nodes:
            node.kill()


@pytest_asyncio.fixture(loop_scope="session")
async def delegation(
    anvil_w3: Any, anvil_accounts: list[Any], infernet_chain: InfernetDeployment, infernet_consumer: Any
) -> Delegation:
    return Delegation(
        infernet_chain, infernet_consumer.address, anvil_accounts[9], await latest_timestamp(anvil_w3) + 600
    )


@pytest.fixture
def sub_cli(client_venv: Path, anvil: Anvil, delegation: Delegation, tmp_path: Path) -> SubCli:
    """`await sub_cli(node, nonce=..., key=..., data=..., expiry=...)`: the real `infernet-client sub`
    for a callback subscription of the test's consumer on ["echo"]; `key` defaults to its signer."""
    calls = 0

    async def run(node: ChainNode, *, nonce: int, key: Any = None, data: Any = None, expiry: int | None = None,
                  containers: tuple[str, ...] = ("echo",)) -> CliResult:  # fmt: skip
        nonlocal calls
        calls += 1
        folder = tmp_path / f"sub-{calls}"
        folder.mkdir()
        key_file, params_file, input_file = folder / "key.txt", folder / "params.json", folder / "input.json"
        key_file.write_text((key if key is not None else delegation.signer.key).to_0x_hex() + "\n")
        params = subscription_params(
            list(containers), owner=delegation.owner, active_at=0, period=0, frequency=1, redundancy=1
        )
        params_file.write_text(json.dumps(params))
        input_file.write_text(json.dumps(data if data is not None else {"input": f"call {calls}"}))
        return await asyncio.to_thread(
            run_cli,
            "sub",
            "--url", node.url,
            "--rpc-url", anvil.url,
            "--address", delegation.chain.coordinator_address,
            "--expiry", str(expiry if expiry is not None else delegation.expiry),
            "--params", str(params_file),
            "--key", str(key_file),
            "-i", str(input_file),
            "--nonce", str(nonce),
        )  # fmt: skip

    return run
