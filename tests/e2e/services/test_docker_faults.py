"""Faults with real Docker: a service killed mid-job, restart bounds, an image that cannot be had."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tests.e2e.services.support import (
    docker,
    docker_inspect,
    info,
    managed_node,
    result,
    run_job,
    running_ids,
    service,
    slow_service,
    submit,
    wait_for,
)
from tests.support.processes import free_port

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def unavailable(node_info: dict[str, object], container_id: str) -> dict[str, str] | None:
    for entry in node_info["unavailable_containers"]:  # type: ignore[attr-defined]
        if entry["id"] == container_id:
            return dict(entry)
    return None


def test_a_container_killed_mid_job_fails_that_job_and_comes_back(tmp_path: Path, prefix: str) -> None:
    containers = [slow_service("slow"), service("echo")]
    with managed_node(tmp_path, prefix, containers, max_restarts=3) as node:
        name = f"{prefix}slow"
        first_run = docker_inspect(name)["State"]["StartedAt"]  # type: ignore[index]
        job_id = submit(node, ["slow"], {"sleep": 30})
        time.sleep(0.5)  # the call is in the container now
        docker("kill", name)

        failed = result(node, job_id, deadline_s=10)
        assert failed["status"] == "failed", failed
        assert failed["result"]["container"] == "slow"
        error = failed["result"]["error"]
        assert error.startswith("container slow died during the call: container exited with code 137"), error

        # While it is down, a job to it fails at once and says why; the other service still works.
        down = wait_for(lambda: unavailable(info(node), "slow"), 5, "the killed container is reported")
        assert "exited with code 137" in down["reason"], down
        started = time.monotonic()
        fast = run_job(node, ["slow"], {"sleep": 0})
        if fast["status"] == "failed":  # unless the restart beat us to it
            assert "Container slow is not available: container exited with code 137" in fast["result"]["error"]
            assert time.monotonic() - started < 2
        assert run_job(node, ["echo"], {"still": "here"})["result"]["output"] == {"still": "here"}

        # The manager restarts it (no Docker restart policy involved) and it serves again.
        wait_for(lambda: "slow" in running_ids(node), 30, "the killed container is ready again")
        assert docker_inspect(name)["State"]["StartedAt"] != first_run  # type: ignore[index]
        job = run_job(node, ["slow"], {"sleep": 0, "again": True})
        assert job["status"] == "success", job
        assert job["result"]["output"] == {"sleep": 0, "again": True}
        log = node.log_text()
        assert "container slow went down: container exited with code 137" in log
        assert "container slow is ready" in log


def test_restarts_are_bounded(tmp_path: Path, prefix: str) -> None:
    # Host networking here: the service gets PORT and listens on 127.0.0.1.
    with managed_node(tmp_path, prefix, [slow_service("slow")], max_restarts=1, network_mode="host") as node:
        name = f"{prefix}slow"
        assert docker_inspect(name)["HostConfig"]["NetworkMode"] == "host"  # type: ignore[index]
        assert run_job(node, ["slow"], {"sleep": 0})["status"] == "success"
        docker("kill", name)
        wait_for(lambda: unavailable(info(node), "slow"), 5, "the first kill is seen")
        wait_for(lambda: "slow" in running_ids(node), 30, "the first restart")
        docker("kill", name)
        gave_up = wait_for(
            lambda: (entry := unavailable(info(node), "slow")) and entry["state"] == "failed" and entry,
            10,
            "the manager gives up",
        )
        assert "not restarted again (docker.max_restarts is 1)" in gave_up["reason"], gave_up
        time.sleep(1.5)
        assert docker_inspect(name)["State"]["Running"] is False  # type: ignore[index]
        job = run_job(node, ["slow"], {"sleep": 0})
        assert job["status"] == "failed"
        assert "Container slow is not available" in job["result"]["error"]
        assert "container slow is unavailable" in node.log_text()


def test_an_image_that_cannot_be_had_leaves_the_others_serving(tmp_path: Path, prefix: str) -> None:
    # A registry on loopback where nothing listens: the pull fails at once, nothing leaves the machine.
    missing = f"127.0.0.1:{free_port()}/infernet-test/missing:latest"
    containers = [service("echo", description="echo"), service("ghost", missing, description="never there")]
    with managed_node(tmp_path, prefix, containers) as node:
        body = info(node)
        assert body["containers"] == [
            {"id": "echo", "description": "echo", "external": True, "image": "infernet-local/hello-world:latest"}
        ]
        [ghost] = body["unavailable_containers"]
        assert ghost["id"] == "ghost" and ghost["image"] == missing and ghost["state"] == "failed"
        assert missing in ghost["reason"] and "could not be pulled" in ghost["reason"]

        assert run_job(node, ["echo"], {"a": 1})["result"]["output"] == {"a": 1}
        job = run_job(node, ["ghost"], {"a": 1})
        assert job["status"] == "failed"
        assert job["result"]["error"].startswith("Container ghost is not available: image " + missing)

        log = node.log_text()
        assert f"container ghost is unavailable: image {missing} is not present locally" in log
        # The line that says the node serves names what it serves and what it cannot, and why.
        [listening] = [line for line in log.splitlines() if "listening on" in line]
        why = f"image {missing} is not present locally and could not be pulled"
        assert f"1 of 2 containers up (echo); unavailable: ghost ({why}" in listening
        assert log.index("containers ready: echo") < log.index(listening)
        assert docker_inspect(f"{prefix}ghost") is None


def test_a_service_that_crashes_at_start_is_given_up_on_not_looped(tmp_path: Path, prefix: str) -> None:
    crashing = service("crashy", command="python3 -c \"import sys; print('model file missing'); sys.exit(3)\"")
    with managed_node(tmp_path, prefix, [crashing, service("echo")], max_restarts=2) as node:
        entry = wait_for(
            lambda: (found := unavailable(info(node), "crashy")) and found["state"] == "failed" and found,
            30,
            "the manager gives up on the crashing container",
        )
        # "exited with code 3", or "exited at once with code 3" when the exit beat the port lookup.
        assert re.search(r"exited (at once )?with code 3", entry["reason"]), entry
        assert "docker.max_restarts is 2" in entry["reason"], entry
        assert run_job(node, ["echo"], {"ok": True})["status"] == "success"
        log = node.log_text()
        assert log.count("restarting it (attempt") == 2
        assert "model file missing" in log  # its last output, for the operator
