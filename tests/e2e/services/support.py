"""Helpers for the Docker e2e tests: node configs, HTTP calls, docker commands.

Every test names its containers with a prefix of its own (`infernet-t<random>-`), and
`remove_containers(prefix)` removes whatever carries it. Ports are published on 127.0.0.1 only,
or the services use host networking on loopback.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.e2e.containers.helpers import IMAGES
from tests.support.processes import NodeProcess, node_config

HERE = Path(__file__).resolve().parent
SLOW_ECHO = HERE / "slow_echo.py"
# Starting a node waits for its containers; the iris classifier needs a few seconds to load.
NODE_START_S = 120.0


def new_prefix() -> str:
    return f"infernet-t{uuid.uuid4().hex[:10]}-"


def remove_containers(prefix: str) -> None:
    listed = subprocess.run(
        ["docker", "ps", "-a", "-q", "--filter", f"name=^/{prefix}"], capture_output=True, text=True, timeout=60
    )
    ids = listed.stdout.split()
    if ids:
        subprocess.run(["docker", "rm", "-f", *ids], capture_output=True, timeout=120)


def docker_inspect(name: str) -> dict[str, Any] | None:
    result = subprocess.run(["docker", "inspect", name], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        return None
    return dict(json.loads(result.stdout)[0])


def docker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, check=True)


def service(container_id: str, image: str = "hello-world", **fields: Any) -> dict[str, Any]:
    return {"id": container_id, "image": IMAGES.get(image, image), **fields}


def slow_service(container_id: str, **fields: Any) -> dict[str, Any]:
    """slow_echo.py run in the hello-world image: exercises `command` and `volumes` too."""
    return service(
        container_id,
        volumes=[f"{SLOW_ECHO}:/opt/slow_echo.py:ro"],
        command="python3 /opt/slow_echo.py",
        **fields,
    )


def managed_config(
    workdir: Path, prefix: str, containers: list[dict[str, Any]], **docker_options: Any
) -> dict[str, Any]:
    options = {"container_prefix": prefix, "on_shutdown": "remove", "ready_timeout": 60, **docker_options}
    config = node_config(workdir, containers, manage_containers=True, docker=options)
    config["log"]["level"] = "DEBUG"
    return config


@contextmanager
def managed_node(
    workdir: Path, prefix: str, containers: list[dict[str, Any]], **docker_options: Any
) -> Iterator[NodeProcess]:
    node = NodeProcess(managed_config(workdir, prefix, containers, **docker_options), workdir)
    node.start(NODE_START_S)
    try:
        yield node
    finally:
        node.stop(60)


# -- talking to the node ------------------------------------------------------------------


def http(method: str, url: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def info(node: NodeProcess) -> dict[str, Any]:
    status, body = http("GET", f"{node.url}/info")
    assert status == 200, body
    return dict(body)


def submit(node: NodeProcess, containers: list[str], data: Any) -> str:
    status, body = http("POST", f"{node.url}/api/jobs", {"containers": containers, "data": data})
    assert status == 200, body
    return str(body["id"])


def result(node: NodeProcess, job_id: str, deadline_s: float = 60.0) -> dict[str, Any]:
    """Poll until the job is no longer running."""
    end = time.monotonic() + deadline_s
    while True:
        status, body = http("GET", f"{node.url}/api/jobs?id={job_id}")
        assert status == 200, body
        if body and body[0]["status"] != "running":
            return dict(body[0])
        if time.monotonic() > end:
            raise TimeoutError(f"job {job_id} still running after {deadline_s}s: {body}")
        time.sleep(0.05)


def run_job(node: NodeProcess, containers: list[str], data: Any) -> dict[str, Any]:
    return result(node, submit(node, containers, data))


def wait_for(predicate: Any, deadline_s: float, what: str, interval: float = 0.1) -> Any:
    end = time.monotonic() + deadline_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"{what}: not within {deadline_s}s")
        time.sleep(interval)


def running_ids(node: NodeProcess) -> list[str]:
    return [entry["id"] for entry in info(node)["containers"]]
