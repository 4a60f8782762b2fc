"""The node's chain module on a real anvil, with real node processes and real service processes.

Each test gets a chain snapshot (reverted afterwards) and starts its own node(s) with a config
pointing at the session's anvil and contracts; nodes are stopped before the snapshot is reverted.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

_REPO_ROOT = str(Path(__file__).resolve().parents[2])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from tests.chain.helpers import ChainNode, node_chain_config  # noqa: E402
from tests.support.chain import (  # noqa: E402, F401  (pytest finds fixtures by name)
    Anvil,
    InfernetDeployment,
    anvil,
    anvil_accounts,
    anvil_w3,
    chain_snapshot,
    infernet_chain,
    infernet_consumer,
)
from tests.support.processes import service_process  # noqa: E402

pytestmark = pytest.mark.chain


@pytest.fixture(scope="session")
def echo_service() -> Iterator[str]:
    with service_process("hello-world") as url:
        yield url


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

    Started nodes are stopped at the end of the test, before the chain snapshot is reverted."""
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
            node.stop()
