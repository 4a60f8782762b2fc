"""SIGKILL the node while jobs are queued and running, start it again: nothing is lost (SQLite and PostgreSQL)."""

import json
import sqlite3
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import NodeProcess, node_config, service_process

pytestmark = pytest.mark.slow


def call(url: str, method: str = "GET", body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def results(node: NodeProcess, ids: list[str]) -> dict[str, Any]:
    query = "&".join(f"id={job_id}" for job_id in ids)
    return {item["id"]: item for item in call(f"{node.url}/api/jobs?{query}")}


def wait_all_final(node: NodeProcess, ids: list[str], deadline_s: float = 30) -> dict[str, Any]:
    end = time.monotonic() + deadline_s
    while True:
        found = results(node, ids)
        if len(found) == len(ids) and all(item["status"] != "running" for item in found.values()):
            return found
        if time.monotonic() > end:
            raise AssertionError(f"jobs not final: {[i for i, v in found.items() if v['status'] == 'running']}")
        time.sleep(0.1)


def test_sigkill_with_queued_and_running_jobs_loses_nothing(tmp_path: Path, node_store_url: str) -> None:
    with service_process("slow") as slow_url:
        config = node_config(
            tmp_path,
            [{"id": "slow", "url": slow_url}],
            jobs={"workers": 2},
            store={"url": node_store_url},
            # On PostgreSQL a node restarted under the same id takes its jobs back at once
            # (under another id it would wait for their leases to run out).
            cluster={"node_id": "node-a"},
        )
        node = NodeProcess(config, tmp_path).start()
        try:
            # Two workers: two jobs get caught inside the (slow) container call, the rest wait.
            ids = [
                call(f"{node.url}/api/jobs", "POST", {"containers": ["slow"], "data": {"sleep": 30, "n": n}})["id"]
                for n in range(2)
            ]
            ids += [
                call(f"{node.url}/api/jobs", "POST", {"containers": ["slow"], "data": {"sleep": 0, "n": n}})["id"]
                for n in range(2, 8)
            ]
            time.sleep(0.5)
            node.kill()

            node.start()
            final = wait_all_final(node, ids)
        finally:
            node.stop()

    interrupted = [final[i] for i in ids[:2]]
    for item in interrupted:
        assert item["status"] == "failed"
        assert item["result"]["error"] == "node restarted while the job was running"
    for n, job_id in enumerate(ids[2:], start=2):
        assert final[job_id]["status"] == "success", final[job_id]
        assert final[job_id]["result"]["output"] == {"sleep": 0, "n": n}
    if node_store_url.startswith("sqlite"):
        check = sqlite3.connect(tmp_path / "node.db").execute("PRAGMA integrity_check").fetchone()[0]
        assert check == "ok"


def test_graceful_stop_lets_running_jobs_finish(tmp_path: Path, node_store_url: str) -> None:
    with service_process("slow") as slow_url:
        config = node_config(
            tmp_path,
            [{"id": "slow", "url": slow_url}],
            jobs={"workers": 1, "shutdown_grace_seconds": 10},
            store={"url": node_store_url},
        )
        node = NodeProcess(config, tmp_path).start()
        running = call(f"{node.url}/api/jobs", "POST", {"containers": ["slow"], "data": {"sleep": 1}})["id"]
        waiting = call(f"{node.url}/api/jobs", "POST", {"containers": ["slow"], "data": {"sleep": 0}})["id"]
        time.sleep(0.3)
        assert node.stop() == 0
        node.start()
        try:
            final = wait_all_final(node, [running, waiting])
        finally:
            node.stop()
    # The running job finished within the grace period; the queued one ran after the restart.
    assert final[running]["status"] == "success"
    assert final[waiting]["status"] == "success"
    assert "waiting up to" in node.log_text()
