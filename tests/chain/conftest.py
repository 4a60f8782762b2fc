"""The node's chain module on a real anvil, with real node processes and real service processes.

Each test gets a chain snapshot (reverted afterwards) and starts its own node(s) with a config
pointing at the session's anvil and contracts; nodes are stopped before the snapshot is reverted.
"""

from __future__ import annotations

import os
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
    rpc,
)
from tests.support.client import ClientUnavailable, ensure_client_venv, looks_offline  # noqa: E402
from tests.support.processes import service_process  # noqa: E402

pytestmark = pytest.mark.chain


@pytest.fixture(scope="session")
def client_venv() -> Path:
    """The real infernet-client 1.4.0 (scripts/client-venv.sh). Skipped only when offline and not in CI."""
    try:
        return ensure_client_venv()
    except ClientUnavailable as error:
        if looks_offline(str(error)) and not os.environ.get("CI"):
            pytest.skip(f"infernet-client venv cannot be built without network access to PyPI: {error}")
        raise


@pytest.fixture(scope="session")
def echo_service() -> Iterator[str]:
    with service_process("hello-world") as url:
        yield url


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
