"""Two node processes on one PostgreSQL database share the job queue's bound and the per-IP
rate limit: the limits hold across the nodes, exactly, not per process (migration 0007)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.postgres import create_database_sync, drop_database_sync, postgres_server  # noqa: F401
from tests.support.processes import NodeProcess, node_config, service_process

pytestmark = [pytest.mark.slow]

QUEUE_SIZE = 5
RATE, PERIOD = 12, 3600.0


def call(url: str, method: str = "GET", body: Any = None) -> tuple[int, Any, str | None]:
    """(status, JSON body, Retry-After) of one request."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), response.headers.get("Retry-After")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), error.headers.get("Retry-After")


@pytest.fixture
def database(postgres_server: str) -> Iterator[str]:  # noqa: F811
    url = create_database_sync(postgres_server)
    try:
        yield url
    finally:
        drop_database_sync(postgres_server, url)


@pytest.fixture
def two_nodes(tmp_path: Path, database: str) -> Iterator[tuple[NodeProcess, NodeProcess]]:
    with service_process("slow") as slow_url:
        nodes = []
        for name in ("node-a", "node-b"):
            workdir = tmp_path / name
            workdir.mkdir()
            config = node_config(
                workdir,
                [{"id": "slow", "url": slow_url}],
                server={"rate_limit": {"num_requests": RATE, "period": PERIOD}},
                store={"url": database},
                jobs={"workers": 2, "queue_size": QUEUE_SIZE},
                cluster={"node_id": name},
            )
            nodes.append(NodeProcess(config, workdir))
        try:
            for node in nodes:
                node.start()
            yield nodes[0], nodes[1]
        except BaseException:
            for node in nodes:
                print(f"--- {node.workdir.name} ---\n{node.log_text()[-3000:]}")
            raise
        finally:
            for node in nodes:
                node.kill()


def test_the_queue_bound_and_the_rate_limit_hold_across_two_nodes(two_nodes: tuple[NodeProcess, NodeProcess]) -> None:
    a, b = two_nodes
    # The rate limit counts in windows of PERIOD: start well inside one.
    left = PERIOD - time.time() % PERIOD
    if left < 60:
        time.sleep(left + 1)

    # Queue: five slow jobs fill the bound of the whole store, taken on both nodes.
    job = {"containers": ["slow"], "data": {"sleep": 60}}
    for node in (a, b, a, b, a):
        status, body, _ = call(f"{node.url}/api/jobs", "POST", job)
        assert status == 200, body
    for node in (b, a):  # the sixth, on either node, is refused (each node alone holds 2 or 3)
        status, body, retry_after = call(f"{node.url}/api/jobs", "POST", job)
        assert status == 429 and body["error"] == "Too many jobs queued, retry later", body
        assert retry_after is not None and float(retry_after) > 0
    status, answers, _ = call(f"{b.url}/api/jobs/batch", "POST", [job, job])
    assert status == 200 and all(answer["error"] == "Too many jobs queued, retry later" for answer in answers)
    # Counted where they were refused, as the queue's own refusals are.
    for node, refused in ((a, 1), (b, 3)):
        with urllib.request.urlopen(f"{node.url}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert f'infernet_jobs_rejected_total{{bound="queue",container="slow"}} {refused}.0' in metrics

    # Rate limit: RATE calls of one route from one client across both nodes, then 429 on either.
    statuses = [call(f"{node.url}/info")[0] for node in [a, b] * (RATE // 2)]
    assert statuses == [200] * RATE
    for node in (a, b):
        status, body, retry_after = call(f"{node.url}/info")
        assert status == 429 and body["error"] == "Too many requests", body
        assert retry_after is not None and 0 < float(retry_after) <= PERIOD
    # The POSTs above (9 on /api/jobs and /api/jobs/batch) are counted per route: /api/jobs has room.
    assert call(f"{a.url}/api/jobs?id=unknown")[0] == 200
