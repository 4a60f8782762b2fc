"""Two node processes on one PostgreSQL database: any node answers for any job, and a job
runs once even when a node is SIGKILLed mid-run.

The slow service logs every call it receives (CALLS_FILE), so "ran once" is counted at the
service, not taken from the nodes' word. Clients are the real infernet-client library.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.client import run_library
from tests.support.cluster import call, database, get_text, submit, wait_for  # noqa: F401
from tests.support.cluster import service_calls as calls
from tests.support.postgres import postgres_server  # noqa: F401
from tests.support.processes import NodeProcess, node_config, service_process

pytestmark = [pytest.mark.slow, pytest.mark.client]

DIED = "node node-a died while the job was running"
# Short leases, so that node A's death shows within seconds.
CLUSTER = {"lease_seconds": 2.0, "renew_seconds": 0.5}


def test_two_nodes_share_jobs_and_a_killed_node_s_jobs_run_once(
    tmp_path: Path,
    database: str,  # noqa: F811
    client_venv: Path,
) -> None:
    calls_file = tmp_path / "calls.jsonl"
    with service_process("slow", env={"CALLS_FILE": str(calls_file)}) as slow_url:
        containers: list[dict[str, Any]] = [
            {"id": "slow", "url": slow_url},
            {"id": "again", "url": slow_url, "retry_interrupted": True},
        ]
        nodes = []
        for name, workers in (("node-a", 3), ("node-b", 4)):
            workdir = tmp_path / name
            workdir.mkdir()
            config = node_config(
                workdir,
                containers,
                store={"url": database},
                jobs={"workers": workers},
                cluster={**CLUSTER, "node_id": name},
            )
            nodes.append(NodeProcess(config, workdir))
        a, b = nodes
        try:
            a.start()
            b.start()

            # Submitted on A, polled on B, with the real client.
            shared = run_library(
                f"""
                async def main():
                    job_id = await client.request_job({{"containers": ["slow"], "data": {{"marker": "shared"}}}})
                    other = NodeClient({b.url!r})
                    return {{"id": job_id, "on_b": await other.get_job_result_sync(job_id, retries=20)}}
                """,
                a.url,
            )
            assert shared["on_b"] == {
                "id": shared["id"],
                "status": "success",
                "result": {"container": "slow", "output": {"marker": "shared"}},
            }

            # A's three workers: two jobs that are not safe to retry and one that is, all running;
            # behind them, queued jobs that A will never start.
            running = [submit(a, "slow", f"running-{n}", 60) for n in range(2)]
            retried = submit(a, "again", "retried", 3)
            wait_for(lambda: {"running-0", "running-1", "retried"} <= set(calls(calls_file)), 20, "A's jobs to run")
            queued = [submit(a, "slow", f"queued-{n}", 0) for n in range(6)]
            # While A lives, B answers for A's jobs from the store: still running.
            assert {item["status"] for item in call(f"{b.url}/api/jobs?id={queued[0]}&id={running[0]}")} == {"running"}
            a.kill()

            ids = [*running, retried, *queued]
            query = "&".join(f"id={job_id}" for job_id in ids)

            def final() -> bool:
                return all(item["status"] != "running" for item in call(f"{b.url}/api/jobs?{query}"))

            wait_for(final, 30, "B to take over A's jobs")
            results = {item["id"]: item for item in call(f"{b.url}/api/jobs?{query}")}
            for job_id in running:
                assert results[job_id]["status"] == "failed"
                assert results[job_id]["result"] == {"container": "slow", "error": DIED}
            assert results[retried]["status"] == "success", results[retried]
            for n, job_id in enumerate(queued):
                assert results[job_id] == {
                    "id": job_id,
                    "status": "success",
                    "result": {"container": "slow", "output": {"marker": f"queued-{n}", "sleep": 0}},
                }
            # One of A's queued jobs, read on B with the real client.
            polled = run_library(
                f"""
                async def main():
                    return await client.get_job_result_sync({queued[0]!r})
                """,
                b.url,
            )
            assert polled["status"] == "success"
            # B says what it took over from A: on /info and /metrics.
            assert call(f"{b.url}/info")["cluster"]["claims"] == {"queued": 6, "rerun": 1, "failed": 2}
            metrics = get_text(f"{b.url}/metrics")
            for outcome, count in (("queued", 6), ("rerun", 1), ("failed", 2)):
                assert f'infernet_cluster_jobs_claimed_total{{outcome="{outcome}"}} {count}.0' in metrics
        except BaseException:
            for node in nodes:
                print(f"--- {node.workdir.name} ---\n{node.log_text()[-3000:]}")
            raise
        finally:
            a.kill()
            assert b.stop() == 0

    received = calls(calls_file)
    twice = {marker: count for marker, count in received.items() if count > 1}
    assert twice == {"retried": 2}, f"jobs that reached the service more than once: {twice}"
    assert all(received[f"queued-{n}"] == 1 for n in range(6))
