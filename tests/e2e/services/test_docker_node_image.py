"""The node's own image: it builds, and the node runs in it managing sibling containers.

The node container gets the host's Docker socket and host networking (as docker-compose.yaml
runs it): the services it starts publish their ports on the host's 127.0.0.1.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.services.support import docker_inspect, http, info, run_job, service, wait_for
from tests.support.client import run_cli
from tests.support.processes import ROOT, free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow]

NODE_IMAGE = "infernet-local/node:latest"


@pytest.fixture(scope="module")
def node_image(docker_images: None) -> str:
    build = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-node-image.sh"), NODE_IMAGE],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert build.returncode == 0, f"build-node-image.sh failed:\n{build.stdout}\n{build.stderr}"
    return NODE_IMAGE


class ContainerisedNode:
    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.url = f"http://127.0.0.1:{port}"

    def logs(self) -> str:
        result = subprocess.run(["docker", "logs", self.name], capture_output=True, text=True, timeout=60)
        return result.stdout + result.stderr


@pytest.fixture
def containerised_node(node_image: str, prefix: str, tmp_path: Path) -> Iterator[ContainerisedNode]:
    port = free_port()
    config = {
        "log": {"path": None},
        "manage_containers": True,
        "server": {"host": "127.0.0.1", "port": port, "rate_limit": {"num_requests": 0}},
        # The store stays inside the node's container (its /node/data volume).
        "docker": {"container_prefix": prefix, "on_shutdown": "remove"},
        "containers": [
            service("echo", description="echo"),
            service("iris", "iris-classifier", description="iris"),
        ],
    }
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    node = ContainerisedNode(f"{prefix}node", port)
    subprocess.run(
        [
            "docker", "run", "-d", "--name", node.name, "--network", "host",
            "-v", "/var/run/docker.sock:/var/run/docker.sock",
            "-v", f"{config_path}:/node/config.json:ro",
            node_image,
        ],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    try:
        wait_for(lambda: _answers(node.url), 120, f"the containerised node's /health\n{node.logs()}", interval=0.25)
        yield node
    finally:
        subprocess.run(["docker", "rm", "-f", node.name], capture_output=True, timeout=120)


def _answers(url: str) -> bool:
    try:
        return http("GET", f"{url}/health", timeout=2)[0] == 200
    except OSError:
        return False


def test_the_node_runs_in_its_image_and_manages_its_services(
    containerised_node: ContainerisedNode, prefix: str
) -> None:
    node = containerised_node
    assert [entry["id"] for entry in info(node)["containers"]] == ["echo", "iris"]  # type: ignore[arg-type]
    # Siblings on the host's Docker, not nested.
    for name in ("echo", "iris"):
        inspect = docker_inspect(f"{prefix}{name}")
        assert inspect is not None and inspect["State"]["Running"]

    job = run_job(node, ["echo", "iris"], {"measurements": [[7.0, 3.2, 4.7, 1.4]]})  # type: ignore[arg-type]
    assert job["status"] == "success", job
    assert job["result"]["output"]["predictions"][0]["species"] == "versicolor"

    # docker stop: SIGTERM to the node, which removes its services (on_shutdown remove).
    subprocess.run(["docker", "stop", "-t", "60", node.name], check=True, capture_output=True, timeout=120)
    state = docker_inspect(node.name)["State"]  # type: ignore[index]
    assert state["ExitCode"] == 0, node.logs()
    assert docker_inspect(f"{prefix}echo") is None and docker_inspect(f"{prefix}iris") is None
    assert "container echo is ready" in node.logs()


@pytest.mark.client
def test_the_real_client_against_the_containerised_node(
    containerised_node: ContainerisedNode, client_venv: Path
) -> None:
    cli = run_cli("job", "--url", containerised_node.url, "-c", "iris", "--sync", stdin="[5.1, 3.5, 1.4, 0.2]")
    assert cli.returncode == 0, cli.describe()
    assert cli.json()["predictions"][0]["species"] == "setosa"
