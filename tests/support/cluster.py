"""Several node processes on one PostgreSQL database, and the plain HTTP calls the cluster tests make.

`ClusterNodes` names each node (`node-1`, `node-2`, ...), gives it a fixed port (so a node
restarted after `kill -9` answers at the same URL) and its own work directory, and shares one
store and one `cluster` section (short leases, so failovers fit in a test). The slow service's
call log (`CALLS_FILE`, one JSON line per call) is read by `service_calls`: "ran once" is
counted at the service, not taken from the nodes' word.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.postgres import create_database_sync, drop_database_sync
from tests.support.processes import NodeProcess, free_port, node_config

# Short leases: a dead node's jobs and the chain sender pass on within ~2 s.
SHORT_LEASES = {"lease_seconds": 2.0, "renew_seconds": 0.5}
DIED = "node {} died while the job was running"


def call(url: str, method: str = "GET", body: Any = None, timeout: float = 10) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def get_text(url: str, timeout: float = 10) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return str(response.read().decode())


def submit(node: NodeProcess, container: str, marker: str, sleep: float) -> str:
    body = {"containers": [container], "data": {"marker": marker, "sleep": sleep}}
    return str(call(f"{node.url}/api/jobs", "POST", body)["id"])


def service_calls(path: Path) -> Counter[str]:
    """marker -> how many calls the slow service received with it."""
    if not path.exists():
        return Counter()
    return Counter(json.loads(line)["marker"] for line in path.read_text().splitlines() if line)


def wait_for(check: Callable[[], Any], deadline_s: float, what: str) -> None:
    end = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def database(postgres_server: str) -> Iterator[str]:
    """A fresh PostgreSQL database for node processes (`store.url`), dropped afterwards."""
    url = create_database_sync(postgres_server)
    try:
        yield url
    finally:
        drop_database_sync(postgres_server, url)


class ClusterNodes:
    """`count` node processes on the store `database`; `make(config)` builds each one's process
    (NodeProcess, or a subclass such as the chain tests' ChainNode)."""

    def __init__(
        self,
        tmp_path: Path,
        database: str,
        count: int,
        config: Callable[[Path, int], dict[str, Any]],
        make: Callable[[dict[str, Any], Path], NodeProcess] = NodeProcess,
        cluster: dict[str, Any] | None = None,
    ) -> None:
        self.nodes: list[NodeProcess] = []
        for index in range(1, count + 1):
            name = f"node-{index}"
            workdir = tmp_path / name
            workdir.mkdir(exist_ok=True)
            node = config(workdir, free_port())
            node["store"] = {"url": database}
            node["cluster"] = {**SHORT_LEASES, **(cluster or {}), "node_id": name}
            self.nodes.append(make(node, workdir))

    def by_id(self, node_id: str) -> NodeProcess:
        return next(node for node in self.nodes if node.config["cluster"]["node_id"] == node_id)

    def alive(self) -> list[NodeProcess]:
        return [node for node in self.nodes if node.process is not None and node.process.poll() is None]

    def dump_logs(self, tail: int = 4000) -> None:
        for node in self.nodes:
            print(f"--- {node.workdir.name} ---\n{node.log_text()[-tail:]}")

    def kill_all(self) -> None:
        for node in self.nodes:
            node.kill()


def rest_config(containers: list[dict[str, Any]], **sections: Any) -> Callable[[Path, int], dict[str, Any]]:
    """A `config` for ClusterNodes: a chain-less node with these containers."""

    def build(workdir: Path, port: int) -> dict[str, Any]:
        return node_config(workdir, containers, port=port, **sections)

    return build
