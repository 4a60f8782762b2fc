"""Three node processes on one PostgreSQL: a job submitted on one node is polled on the others
with the real infernet-client 1.4.0, library and CLI, while it runs and once it is done."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.support.client import client_venv, run_cli, run_library  # noqa: F401
from tests.support.cluster import ClusterNodes, database, rest_config  # noqa: F401
from tests.support.postgres import postgres_server  # noqa: F401
from tests.support.processes import service_process

pytestmark = [pytest.mark.slow, pytest.mark.client]


async def test_a_job_submitted_on_a_is_polled_on_b_and_c_with_the_real_client(
    tmp_path: Path,
    database: str,  # noqa: F811
    client_venv: Path,  # noqa: F811
) -> None:
    with service_process("slow") as slow_url:
        cluster = ClusterNodes(tmp_path, database, 3, rest_config([{"id": "slow", "url": slow_url}]))
        a, b, c = cluster.nodes
        try:
            await asyncio.gather(*(asyncio.to_thread(node.start) for node in cluster.nodes))
            # The library: submitted on A; on B and C while it runs (2 s), then its result on both.
            seen = await asyncio.to_thread(
                run_library,
                f"""
                async def main():
                    job_id = await client.request_job({{"containers": ["slow"], "data": {{"sleep": 2, "n": 1}}}})
                    b, c = NodeClient({b.url!r}), NodeClient({c.url!r})
                    running = [await b.get_job_results([job_id]), await c.get_job_results([job_id])]
                    done = [await b.get_job_result_sync(job_id, retries=50), await c.get_job_result_sync(job_id)]
                    # And back: one job submitted on B, read on A and C.
                    other = await b.request_job({{"containers": ["slow"], "data": {{"n": 2}}}})
                    back = [await client.get_job_result_sync(other, retries=50), await c.get_job_result_sync(other)]
                    return {{"id": job_id, "running": running, "done": done, "other": other, "back": back}}
                """,
                a.url,
            )
            job_id = seen["id"]
            assert seen["running"] == [[{"id": job_id, "status": "running", "result": None}]] * 2
            result = {"container": "slow", "output": {"sleep": 2, "n": 1}}
            assert seen["done"] == [{"id": job_id, "status": "success", "result": result}] * 2
            other = {"id": seen["other"], "status": "success", "result": {"container": "slow", "output": {"n": 2}}}
            assert seen["back"] == [other, other]
            # The CLI reads both jobs on C.
            cli = await asyncio.to_thread(run_cli, "results", "--url", c.url, "--id", job_id, "--id", seen["other"])
            assert cli.returncode == 0, cli.describe()
            assert cli.json() == [{"id": job_id, "status": "success", "result": result}, other]
        except BaseException:
            cluster.dump_logs()
            raise
        finally:
            for node in cluster.nodes:
                node.stop()
