"""The node's chain module on a real anvil, with real node processes and real service processes.

Each test gets a chain snapshot (reverted afterwards) and starts its own node(s) with a config
pointing at the session's anvil and contracts; nodes are stopped before the snapshot is reverted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.e2e.chain.helpers import ChainNode, node_chain_config
from tests.support.chain import (  # noqa: F401  (pytest finds fixtures by name)
    Anvil,
    InfernetDeployment,
    anvil,
    anvil_accounts,
    anvil_w3,
    chain_snapshot,
    infernet_chain,
    infernet_consumer,
    rpc,
)
from tests.support.client import client_venv  # noqa: F401  (pytest finds fixtures by name)
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
    """Builds node processes for this test: `chain_node(key_index=1, containers=..., **config)`.

    Nodes are killed at the end of the test, before the chain snapshot is reverted (a graceful
    stop is tested on its own)."""
    nodes: list[ChainNode] = []

    def make(
        *,
        key_index: int = 1,
        name: str = "node",
        containers: list[dict[str, Any]] | None = None,
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
        node = ChainNode(config, workdir)
        nodes.append(node)
        return node

    try:
        yield make
    finally:
        for node in nodes:
            node.kill()
