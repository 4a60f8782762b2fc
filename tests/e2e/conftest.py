"""End-to-end fixtures: the real infernet-client 1.4.0 against a real node process.

One client venv (scripts/client-venv.sh), one hello-world service process and one node are
shared by the whole session. The node serves the sample echo service under several ids:

    echo        external, the plain case
    inner       external: false (may only follow another container in a chain)
    proofy      generates_proofs: true
    restricted  allowed_ips ["10.0.0.0/8"] (config only; no traffic goes there)
    dead        a URL on which nothing listens, so its jobs fail
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.client import client_venv  # noqa: F401  (pytest finds fixtures by name)
from tests.support.processes import NodeProcess, echo_service, free_port, node_config, running_node  # noqa: F401


def client_test_containers(service_url: str) -> list[dict[str, object]]:
    return [
        {"id": "echo", "url": service_url, "external": True, "description": "hello-world echo"},
        {"id": "inner", "url": service_url, "external": False},
        {"id": "proofy", "url": service_url, "external": True, "generates_proofs": True},
        {"id": "restricted", "url": service_url, "external": True, "allowed_ips": ["10.0.0.0/8"]},
        {"id": "dead", "url": f"http://127.0.0.1:{free_port()}", "external": True},
    ]


@pytest.fixture(scope="session")
def client_node(
    client_venv: Path, echo_service: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeProcess]:
    """A chain-disabled node on 127.0.0.1 with the containers above."""
    workdir = tmp_path_factory.mktemp("client-node")
    config = node_config(workdir, client_test_containers(echo_service))
    with running_node(config, workdir) as node:
        yield node


@pytest.fixture(scope="session")
def node_url(client_node: NodeProcess) -> str:
    return client_node.url
