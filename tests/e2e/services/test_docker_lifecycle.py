"""What the node does with its containers when it stops, and when it starts again."""

from __future__ import annotations

import signal
import time
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


def test_a_stop_during_start_up_does_not_wait_for_the_containers(tmp_path: Path, prefix: str) -> None:
    """Ctrl-C while a container is still starting (a first run can take minutes): the node stops
    at once, and the containers it had started get docker.on_shutdown as at any stop."""
    # `sleep` never serves /health, and as PID 1 it ignores SIGTERM: stop_timeout 1 bounds its stop.
    config = managed_config(tmp_path, prefix, [service("sleepy", command="sleep 600")], start_wait=120, stop_timeout=1)
    node = NodeProcess(config, tmp_path).launch()
    try:
        node.wait_for_log(f"created container {prefix}sleepy", NODE_START_S)
        assert node.process is not None
        signalled = time.monotonic()
        node.process.send_signal(signal.SIGINT)
        assert node.process.wait(60) == 0, node.log_text()
    finally:
        node.stop()
    assert time.monotonic() - signalled < 30  # not docker.start_wait's 120 s
    log = node.log_text()
    assert "SIGINT (Ctrl-C) received: stopping" in log
    assert "stopping during start-up: not waiting for the containers" in log
    assert f"container {prefix}sleepy removed" in log  # managed_config: on_shutdown remove
    assert "listening on" not in log and "Unclosed" not in log
    assert "infernet-node stopped: shutdown took" in log.rstrip().splitlines()[-1]
    assert docker_inspect(f"{prefix}sleepy") is None
