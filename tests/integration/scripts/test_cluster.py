"""scripts/cluster.sh: three nodes on one PostgreSQL database start, answer for each other's jobs
and stop, as the README's "Several nodes" shows."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import call, wait_for
from tests.support.postgres import drop_database_sync, postgres_server  # noqa: F401
from tests.support.processes import ROOT, free_port

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "scripts" / "cluster.sh"


def _free_run(count: int) -> int:
    """A first port of `count` consecutive free ports on 127.0.0.1."""
    for _ in range(50):
        first = free_port()
        if first + count > 65535:
            continue
        sockets = []
        try:
            for port in range(first, first + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no run of free ports")


@pytest.fixture
def cluster_env(tmp_path: Path, postgres_server: str) -> Iterator[dict[str, str]]:  # noqa: F811
    name = f"test_{uuid.uuid4().hex[:16]}"
    env = {
        **os.environ,
        "VENV": str(Path(sys.executable).parent.parent),  # the venv running the tests
        "INFERNET_CLUSTER_DIR": str(tmp_path / "cluster"),
        "INFERNET_CLUSTER_DB": name,
        "INFERNET_CLUSTER_PORT": str(_free_run(3)),
        "INFERNET_CLUSTER_SERVICE_PORT": str(free_port()),
    }
    try:
        yield env
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)
        drop_database_sync(postgres_server, f"{postgres_server.rsplit('/', 1)[0]}/{name}")


def run(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=180)


def test_start_a_job_across_the_nodes_status_and_stop(cluster_env: dict[str, str]) -> None:
    started = run("start", cluster_env)
    assert started.returncode == 0, started.stderr
    first = int(cluster_env["INFERNET_CLUSTER_PORT"])
    urls = [f"http://127.0.0.1:{first + n}" for n in range(3)]
    for n, url in enumerate(urls, start=1):
        assert f"node-{n} on {url}" in started.stderr
        assert call(f"{url}/info")["cluster"]["node_id"] == f"node-{n}"
    wait_for(lambda: all(call(f"{url}/info")["cluster"]["nodes_alive"] == 3 for url in urls), 15, "3 heartbeats")

    status = run("status", cluster_env)
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["node-1", "node-2", "node-3"]
    assert all(json.loads(line.split("cluster: ", 1)[1])["nodes_alive"] == 3 for line in lines)

    # Submitted on node-1, answered by node-2 and node-3.
    job_id = call(f"{urls[0]}/api/jobs", "POST", {"containers": ["hello-world"], "data": {"hello": "cluster"}})["id"]
    result = {"container": "hello-world", "output": {"hello": "cluster"}}
    expected = {"id": job_id, "status": "success", "result": result}

    def done_everywhere() -> bool:
        return all(call(f"{url}/api/jobs?id={job_id}") == [expected] for url in urls[1:])

    wait_for(done_everywhere, 15, "the job on node-2 and node-3")

    pids = [int((Path(cluster_env["INFERNET_CLUSTER_DIR"]) / f"node-{n}" / "node.pid").read_text()) for n in (1, 2, 3)]
    stopped = run("stop", cluster_env)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stderr.count("stopped") == 4  # three nodes and the sample service
    time.sleep(0.2)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    after = run("status", cluster_env)
    assert after.returncode == 3 and after.stdout.splitlines() == ["node-1 stopped", "node-2 stopped", "node-3 stopped"]
