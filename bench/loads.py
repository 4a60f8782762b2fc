"""The loads driven from Python (on the load core): latency loops, the job load, streams."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence

from client import Connection

HELLO = {"containers": ["hello-world"], "data": {"prompt": "hello"}}
STREAM_TEXT = "hello world from the node benchmark"


async def _timed(n: int, once: Callable[[], Awaitable[object]]) -> list[float]:
    """Latencies (ms) of `n` sequential calls."""
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await once()
        out.append((time.perf_counter() - start) * 1000)
    return out


async def direct_calls(port: int, n: int) -> list[float]:
    """Latency (ms) of POST /service_output straight to the service, one at a time."""
    body = json.dumps({"source": 1, "destination": 1, "data": HELLO["data"], "requires_proof": False}).encode()
    conn = await Connection("127.0.0.1", port).open()

    async def once() -> None:
        reply = await conn.request("POST", "/service_output", body)
        assert reply.status == 200, reply

    try:
        await _timed(max(20, n // 10), once)
        return await _timed(n, once)
    finally:
        await conn.close()


async def job_once(conn: Connection, body: bytes, poll_s: float) -> tuple[str, int]:
    """POST a job, then GET it until it finished; returns its id and the number of GETs."""
    reply = await conn.request("POST", "/api/jobs", body)
    assert reply.status == 200, reply
    job_id = reply.json()["id"]
    polls = 0
    while True:
        if poll_s:
            await asyncio.sleep(poll_s)
        polls += 1
        found = (await conn.request("GET", f"/api/jobs?id={job_id}")).json()
        if found and found[0]["status"] != "running":
            assert found[0]["status"] == "success", found
            return job_id, polls


async def job_latency(port: int, n: int) -> tuple[list[float], list[str], float]:
    """One job at a time: POST, then GET at once and again until it finished.

    Returns the latencies (ms, POST sent -> the GET that shows the result answered),
    the job ids, and the mean number of GETs per job.
    """
    body = json.dumps(HELLO).encode()
    conn = await Connection("127.0.0.1", port).open()
    ids: list[str] = []
    polls: list[int] = []

    async def once() -> None:
        job_id, count = await job_once(conn, body, 0)
        ids.append(job_id)
        polls.append(count)

    try:
        await _timed(max(20, n // 10), once)
        ids.clear()
        polls.clear()
        return await _timed(n, once), ids, statistics.mean(polls)
    finally:
        await conn.close()


async def job_throughput(
    port: int | Sequence[int], seconds: float, concurrency: int, poll_s: float
) -> tuple[int, float]:
    """`concurrency` clients that each submit a job and poll it until done; (jobs completed, seconds).

    With several ports (nodes), the clients are spread over them in turn, each keeping to its node."""
    ports = [port] if isinstance(port, int) else list(port)
    body = json.dumps(HELLO).encode()
    done = 0
    counting = False
    warm_s = 0.5
    stop_at = time.monotonic() + warm_s + seconds

    async def client(port: int) -> None:
        nonlocal done
        conn = await Connection("127.0.0.1", port).open()
        try:
            while time.monotonic() < stop_at:
                await job_once(conn, body, poll_s)
                if counting:
                    done += 1
        finally:
            await conn.close()

    tasks = [asyncio.ensure_future(client(ports[index % len(ports)])) for index in range(concurrency)]
    await asyncio.sleep(warm_s)
    counting = True
    started = time.monotonic()
    await asyncio.sleep(seconds)
    counting = False
    elapsed = time.monotonic() - started
    completed = done
    await asyncio.gather(*tasks)
    return completed, elapsed


async def stream_ttfb(port: int, n: int, direct: bool) -> dict[str, list[float]]:
    """Per stream (ms): to the first body byte, and (through a node) to the first byte after the id line."""
    if direct:
        path = "/service_output"
        body = json.dumps({"source": 1, "destination": 2, "data": {"prompt": STREAM_TEXT}}).encode()
    else:
        path = "/api/jobs/stream"
        body = json.dumps({"containers": ["hello-world"], "data": {"prompt": STREAM_TEXT}}).encode()
    conn = await Connection("127.0.0.1", port).open()
    out: dict[str, list[float]] = {"first_byte": [], "first_output": []}
    warm = max(5, n // 10)
    try:
        for index in range(n + warm):
            timing = await conn.stream(path, body, id_line=not direct)
            assert timing.status == 200, timing
            text = timing.body.decode()
            assert (text if direct else text.split("\n", 1)[1]) == STREAM_TEXT, text
            if index >= warm:
                out["first_byte"].append(timing.first_byte * 1000)
                if timing.first_output is not None:
                    out["first_output"].append(timing.first_output * 1000)
    finally:
        await conn.close()
    return out


async def stored_count(port: int, ids: Sequence[str]) -> int:
    """How many of `ids` the node returns (GET /api/jobs?id=...&id=... in batches)."""
    conn = await Connection("127.0.0.1", port).open()
    found = 0
    try:
        for start in range(0, len(ids), 50):
            query = "&".join(f"id={job_id}" for job_id in ids[start : start + 50])
            reply = await conn.request("GET", f"/api/jobs?{query}")
            assert reply.status == 200, reply
            found += len(reply.json())
    finally:
        await conn.close()
    return found
