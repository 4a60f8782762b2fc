"""What the node does with its containers when it stops, and when it starts again."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.services.support import NODE_START_S, docker_inspect, managed_config, run_job, service
from tests.support.processes import NodeProcess

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def start(workdir: Path, prefix: str, containers: list[dict[str, object]], **options: object) -> NodeProcess:
    return NodeProcess(managed_config(workdir, prefix, containers, **options), workdir).start(NODE_START_S)


@pytest.mark.parametrize(("on_shutdown", "running", "exists"), [("stop", False, True), ("remove", False, False)])
def test_shutdown_stops_or_removes_the_containers(
    tmp_path: Path, prefix: str, on_shutdown: str, running: bool, exists: bool
) -> None:
    node = start(tmp_path, prefix, [service("echo"), service("other")], on_shutdown=on_shutdown)
    try:
        assert run_job(node, ["echo"], {"a": 1})["status"] == "success"
    finally:
        assert node.stop(60) == 0, node.log_text()
    for name in ("echo", "other"):
        inspect = docker_inspect(f"{prefix}{name}")
        assert (inspect is not None) is exists, f"{name}: {inspect}"
        if inspect is not None:
            assert inspect["State"]["Running"] is running


def test_leave_keeps_them_running_and_the_next_start_reuses_them(tmp_path: Path, prefix: str) -> None:
    name = f"{prefix}echo"
    node = start(tmp_path, prefix, [service("echo")], on_shutdown="leave")
    try:
        assert run_job(node, ["echo"], {"a": 1})["status"] == "success"
    finally:
        assert node.stop(60) == 0, node.log_text()
    before = docker_inspect(name)
    assert before is not None and before["State"]["Running"]

    # Same configuration: the very same container, not even restarted.
    node = start(tmp_path, prefix, [service("echo")], on_shutdown="leave")
    try:
        assert run_job(node, ["echo"], {"b": 2})["result"]["output"] == {"b": 2}
        assert "reusing running container" in node.log_text()
    finally:
        node.stop(60)
    again = docker_inspect(name)
    assert again is not None
    assert (again["Id"], again["State"]["StartedAt"]) == (before["Id"], before["State"]["StartedAt"])

    # A changed configuration: replaced by a new container that has it.
    node = start(tmp_path, prefix, [service("echo", env={"MODELS": "echo,other"})], on_shutdown="remove")
    try:
        assert run_job(node, ["echo"], {"c": 3})["status"] == "success"
        replaced = docker_inspect(name)
        assert replaced is not None and replaced["Id"] != before["Id"]
        assert "MODELS=echo,other" in replaced["Config"]["Env"]
    finally:
        node.stop(60)
    assert docker_inspect(name) is None
