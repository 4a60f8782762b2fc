"""/metrics: HTTP requests by route and status, latency, jobs by state and container,
queue depth, container call latency; real services, the real app."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from node.api.metrics import METRICS
from node.app import build_app
from node.config import parse_config
from tests.support.processes import free_port, node_config, service_process


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    with service_process("hello-world") as url:
        yield url


@pytest.fixture(scope="module")
def slow_url() -> Iterator[str]:
    with service_process("slow") as url:
        yield url


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path, echo_url: str, slow_url: str) -> TestClient:
    config = parse_config(
        node_config(
            tmp_path,
            [
                {"id": "echo", "url": echo_url},
                {"id": "slow", "url": slow_url},
                {"id": "dead", "url": f"http://127.0.0.1:{free_port()}"},  # nothing listens there
            ],
            jobs={"queue_size": 3},
        ),
        environ={},
    )
    return await aiohttp_client(build_app(config))


class Scrape:
    def __init__(self, text: str) -> None:
        self.samples = [
            (sample.name, sample.labels, sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]

    def value(self, name: str, **labels: str) -> float | None:
        for sample_name, sample_labels, value in self.samples:
            if sample_name == name and sample_labels == labels:
                return value
        return None

    def names(self) -> set[str]:
        return {name for name, _, _ in self.samples}


async def scrape(client: TestClient) -> Scrape:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return Scrape(await response.text())


async def wait_finished(client: TestClient, job_id: str) -> dict[str, Any]:
    for _ in range(200):
        [result] = await (await client.get(f"/api/jobs?id={job_id}")).json()
        if result["status"] != "running":
            return result
        await asyncio.sleep(0.05)
    raise AssertionError(f"{job_id} did not finish")


async def submit(client: TestClient, container: str, data: Any) -> Any:
    return await client.post("/api/jobs", json={"containers": [container], "data": data})


async def test_http_requests_by_route_and_status(client: TestClient) -> None:
    await client.get("/health")
    await client.get("/health")
    await client.post("/api/jobs", data=b"{nope")  # 400
    await client.get("/no/such/path/12345")  # 404, a path nobody routes
    await client.request("PROPFIND", "/health")  # 405 with a method outside the usual set
    metrics = await scrape(client)
    assert metrics.value("infernet_http_requests_total", route="/health", method="GET", status="200") == 2
    assert metrics.value("infernet_http_requests_total", route="/api/jobs", method="POST", status="400") == 1
    # Client input never becomes a label: unknown paths and methods are folded.
    assert metrics.value("infernet_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert metrics.value("infernet_http_requests_total", route="unmatched", method="other", status="405") == 1
    assert not any("12345" in str(labels) for _, labels, _ in metrics.samples)
    assert metrics.value("infernet_http_request_duration_seconds_count", route="/health", method="GET") == 2
    assert metrics.value("infernet_http_request_duration_seconds_bucket", route="/health", method="GET", le="+Inf") == 2


async def test_jobs_by_state_and_container_and_call_latency(client: TestClient) -> None:
    ok = await (await submit(client, "echo", {"hi": 1})).json()
    dead = await (await submit(client, "dead", {})).json()
    assert (await wait_finished(client, ok["id"]))["status"] == "success"
    assert (await wait_finished(client, dead["id"]))["status"] == "failed"
    streamed = await client.post("/api/jobs/stream", json={"containers": ["echo"], "data": "a b c"})
    assert streamed.status == 200 and (await streamed.read()).endswith(b"a b c")

    # Fill the queue (3) with slow jobs: one more is refused, and the gauges show them.
    slow = [await (await submit(client, "slow", {"sleep": 1.5, "n": n})).json() for n in range(3)]
    refused = await submit(client, "slow", {"n": 4})
    assert refused.status == 429
    await asyncio.sleep(0.2)
    metrics = await scrape(client)
    assert metrics.value("infernet_queue_capacity") == 3
    assert metrics.value("infernet_queue_pending") == 3
    queued = metrics.value("infernet_jobs_in_flight", state="queued", container="slow")
    running = metrics.value("infernet_jobs_in_flight", state="running", container="slow")
    assert (queued, running) == (0, 3), "32 workers: all three run at once"
    assert metrics.value("infernet_queue_depth") == 0
    assert metrics.value("infernet_http_requests_total", route="/api/jobs", method="POST", status="429") == 1
    assert metrics.value("infernet_jobs_rejected_total", container="slow", bound="queue") == 1

    assert metrics.value("infernet_jobs_finished_total", container="echo", status="success") == 2  # job + stream
    assert metrics.value("infernet_jobs_finished_total", container="dead", status="failed") == 1
    assert metrics.value("infernet_jobs_admitted_total", container="slow") == 3
    calls = "infernet_container_call_duration_seconds_count"
    assert metrics.value(calls, container="echo", kind="run", outcome="ok") == 1
    assert metrics.value(calls, container="echo", kind="stream", outcome="ok") == 1
    assert metrics.value(calls, container="dead", kind="run", outcome="unreachable") == 1

    for job in slow:
        assert (await wait_finished(client, job["id"]))["status"] == "success"
    metrics = await scrape(client)
    # Drained: the series stay, at zero.
    assert metrics.value("infernet_jobs_in_flight", state="running", container="slow") == 0
    assert metrics.value("infernet_queue_pending") == 0
    sleep_sum = metrics.value(
        "infernet_container_call_duration_seconds_sum", container="slow", kind="run", outcome="ok"
    )
    assert sleep_sum is not None and sleep_sum >= 3 * 1.5


async def test_process_metrics_and_the_chain_hook(client: TestClient) -> None:
    metrics = await scrape(client)
    assert "process_resident_memory_bytes" in metrics.names()
    # Nothing about a chain until the chain module reports through the hook.
    assert not any(name.startswith("infernet_chain") for name in metrics.names())
    app = client.app
    assert app is not None
    hook = app[METRICS].chain
    hook.head(120)
    hook.synced(118)
    hook.delivered("success")
    metrics = await scrape(client)
    assert metrics.value("infernet_chain_head_block") == 120
    assert metrics.value("infernet_chain_synced_block") == 118
    assert metrics.value("infernet_chain_deliveries_total", outcome="success") == 1


async def test_openmetrics_when_asked(client: TestClient) -> None:
    response = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await response.text()).rstrip().endswith("# EOF")
