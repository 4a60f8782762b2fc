"""Overload: far more jobs than the queue holds.

Beyond the bounds every submission gets a 429 with Retry-After and a JSON body
(batch: per item), the node's memory stays bounded, and every job it accepted
completes. Bounded by OVERLOAD_JOBS submissions (default 2000).
Latency of the 429s is printed, not asserted: speed belongs to the benchmarks.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from node.app import build_app
from node.config import parse_config
from tests.integration.faults.httpcalls import wait_final
from tests.support.processes import NodeProcess, node_config, service_process

JOBS = int(os.environ.get("OVERLOAD_JOBS", "2000"))
QUEUE_SIZE = 40
PER_CONTAINER = 25
CONCURRENCY = 64
MEMORY_BOUND_MB = 150


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def assert_429(status: int, headers: Any, body: Any) -> None:
    assert status == 429
    assert int(headers["Retry-After"]) >= 1
    assert headers["Content-Type"].startswith("application/json")
    assert isinstance(body, dict) and "retry later" in body["error"], body


async def flood(url: str, container: str, count: int) -> tuple[list[str], list[float], int]:
    """Submit `count` jobs, CONCURRENCY at a time; (accepted ids, 429 latencies, others)."""
    accepted: list[str] = []
    refused: list[float] = []
    other = 0
    gate = asyncio.Semaphore(CONCURRENCY)
    async with aiohttp.ClientSession() as session:

        async def one(n: int) -> None:
            nonlocal other
            async with gate:
                start = time.perf_counter()
                async with session.post(
                    f"{url}/api/jobs", json={"containers": [container], "data": {"sleep": 0.05, "n": n}}
                ) as response:
                    body = await response.json()
                    if response.status == 200:
                        accepted.append(body["id"])
                    elif response.status == 429:
                        refused.append(time.perf_counter() - start)
                        assert_429(response.status, response.headers, body)
                    else:
                        other += 1

        await asyncio.gather(*(one(n) for n in range(count)))
    return accepted, refused, other


@pytest.mark.slow
async def test_flood_far_beyond_the_queue_bound(tmp_path: Path) -> None:
    with service_process("slow") as slow_url:
        config = node_config(
            tmp_path,
            [{"id": "a", "url": slow_url}, {"id": "b", "url": slow_url}],
            jobs={"workers": 4, "queue_size": QUEUE_SIZE, "per_container_queue_size": PER_CONTAINER},
        )
        node = NodeProcess(config, tmp_path).start()
        try:
            assert node.process is not None
            # Warm up (imports, pools), then measure the baseline.
            await flood(node.url, "a", 20)
            before = rss_mb(node.process.pid)

            (a_ids, a_refused, a_other), (b_ids, b_refused, b_other) = await asyncio.gather(
                flood(node.url, "a", JOBS), flood(node.url, "b", JOBS // 4)
            )
            after_flood = rss_mb(node.process.pid)
            assert a_other == 0 and b_other == 0
            # Far beyond the bounds: most are refused, but the queue kept working.
            assert len(a_refused) > JOBS // 2
            assert len(a_ids) >= PER_CONTAINER
            # One container at its own bound does not starve the other.
            assert len(b_ids) >= 1

            async with aiohttp.ClientSession() as session:
                # A batch beyond the bound: HTTP 200, one 429-style error per refused item.
                items = [{"containers": ["a"], "data": {"n": n}} for n in range(3 * QUEUE_SIZE)]
                async with session.post(f"{node.url}/api/jobs/batch", json=items) as response:
                    assert response.status == 200
                    answers = await response.json()
                batch_ids = [answer["id"] for answer in answers if "id" in answer]
                refused_items = [answer for answer in answers if "error" in answer]
                assert len(batch_ids) <= PER_CONTAINER and refused_items
                assert all("retry later" in answer["error"] for answer in refused_items)
                async with session.get(f"{node.url}/metrics") as response:
                    metrics = await response.text()
            assert 'infernet_jobs_rejected_total{bound="container",container="a"}' in metrics
            assert "infernet_queue_capacity 40.0" in metrics

            accepted = a_ids + b_ids + batch_ids
            final = await asyncio.to_thread(wait_final, node.url, accepted, 120)
            assert all(item["status"] == "success" for item in final.values()), [
                item for item in final.values() if item["status"] != "success"
            ][:3]
            after = rss_mb(node.process.pid)
            print(
                f"\n{JOBS + JOBS // 4} submitted: {len(accepted)} accepted, {len(a_refused) + len(b_refused)} refused; "
                f"429 latency median {statistics.median(a_refused) * 1000:.1f} ms, "
                f"max {max(a_refused) * 1000:.1f} ms; RSS {before:.0f} -> {after_flood:.0f} -> {after:.0f} MB"
            )
            assert after_flood - before < MEMORY_BOUND_MB
            assert after - before < MEMORY_BOUND_MB
        finally:
            assert node.stop() == 0


async def test_stream_and_batch_are_refused_when_the_queue_is_full(aiohttp_client: Any, tmp_path: Path) -> None:
    with service_process("slow") as slow_url:
        config = parse_config(
            node_config(tmp_path, [{"id": "slow", "url": slow_url}], jobs={"workers": 1, "queue_size": 2}), environ={}
        )
        client: TestClient = await aiohttp_client(build_app(config))
        # One job runs for 2 s, one waits behind it: the bound (2) is reached for that long.
        running = await (await client.post("/api/jobs", json={"containers": ["slow"], "data": {"sleep": 2}})).json()
        waiting = await (await client.post("/api/jobs", json={"containers": ["slow"], "data": {"sleep": 0}})).json()
        response = await client.post("/api/jobs/stream", json={"containers": ["slow"], "data": "x"})
        assert_429(response.status, response.headers, await response.json())
        response = await client.post("/api/jobs/batch", json=[{"containers": ["slow"], "data": {}}] * 2)
        assert response.status == 200
        answers = await response.json()
        assert len(answers) == 2 and all("retry later" in answer["error"] for answer in answers)
        for job in (running, waiting):
            for _ in range(100):
                [result] = await (await client.get(f"/api/jobs?id={job['id']}")).json()
                if result["status"] != "running":
                    break
                await asyncio.sleep(0.05)
            assert result["status"] == "success"


# -- rate limiting (in process: the limiter is HTTP-layer only) ---------------------


@pytest.fixture
async def limited(aiohttp_client: Any, tmp_path: Path) -> TestClient:
    config = parse_config(
        node_config(
            tmp_path,
            [{"id": "echo", "url": "http://127.0.0.1:9"}],
            server={"rate_limit": {"num_requests": 3, "period": 60}, "trusted_proxies": ["127.0.0.1/32"]},
        ),
        environ={},
    )
    return await aiohttp_client(build_app(config))


async def test_rate_limit_answers_json_429_per_client_and_route(limited: TestClient) -> None:
    for _ in range(3):
        assert (await limited.get("/health")).status == 200
    response = await limited.get("/health")
    assert response.status == 429 and response.content_type == "application/json"
    assert await response.json() == {"error": "Too many requests", "params": {"route": "/health"}}
    # 3 per 60 s: the next token is 20 s away.
    assert 1 <= int(response.headers["Retry-After"]) <= 20
    # Another route has its own budget; another client (behind the trusted proxy) too.
    assert (await limited.get("/info")).status == 200
    assert (await limited.get("/health", headers={"X-Forwarded-For": "203.0.113.7"})).status == 200
    # Job submissions are limited with the same JSON answer (before the body is read).
    for _ in range(3):
        await limited.post("/api/jobs", data=b"{}")
    response = await limited.post("/api/jobs", data=b"not even json")
    assert response.status == 429 and (await response.json())["error"] == "Too many requests"
    # Scrapers and status reports are not limited.
    for _ in range(10):
        assert (await limited.get("/metrics")).status == 200
