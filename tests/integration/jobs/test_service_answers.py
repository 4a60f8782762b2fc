"""What a service answers is bounded and cleaned before the node stores or sends it.

A real misbehaving service process (tests/support/hostile_service.py) behind the
node's real app: answers over jobs.max_result_bytes, streams over their byte and
time bounds, NaN and lone surrogates, a service that reflects its bearer token;
and chains over jobs.max_chain_length.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from node.app import build_app
from node.config import parse_config
from node.logs import redact
from tests.support.processes import node_config, service_process

BEARER = "bearer-5ecret-9d41c7e2"
LIMIT = 256 * 1024  # jobs.max_result_bytes and jobs.max_stream_bytes here


@pytest.fixture(scope="module")
def hostile_url() -> Iterator[str]:
    """The misbehaving test service (tests/support/hostile_service.py) as a local process."""
    with service_process("hostile") as url:
        yield url


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path, hostile_url: str) -> AsyncIterator[TestClient]:
    config = parse_config(
        node_config(
            tmp_path,
            [
                {"id": "hostile", "url": hostile_url, "bearer": BEARER},
                {"id": "plain", "url": hostile_url},
            ],
            jobs={
                "max_result_bytes": LIMIT,
                "max_stream_bytes": LIMIT,
                "max_stream_seconds": 1.5,
                "max_chain_length": 3,
                "shutdown_grace_seconds": 1,
            },
        ),
        environ={},
    )
    try:
        yield await aiohttp_client(build_app(config))
    finally:
        redact.clear()  # build_app registered the bearer in the process-wide redactor


async def run_job(client: TestClient, data: Any, container: str = "plain", deadline_s: float = 15) -> dict[str, Any]:
    response = await client.post("/api/jobs", json={"containers": [container], "data": data})
    body = await response.json()
    assert response.status == 200, body
    job_id = body["id"]
    end = asyncio.get_running_loop().time() + deadline_s
    while True:
        response = await client.get("/api/jobs", params={"id": job_id})
        text = await response.text()
        [job] = strict_json(text)
        if job["status"] != "running":
            return job
        assert asyncio.get_running_loop().time() < end, f"job still running after {deadline_s}s"
        await asyncio.sleep(0.05)


def strict_json(text: str) -> Any:
    """json.loads, refusing NaN and Infinity (which it accepts by default): the node writes standard JSON."""

    def refuse(name: str) -> None:
        raise AssertionError(f"the node wrote {name}, which is not standard JSON: {text[:200]}")

    return json.loads(text, parse_constant=refuse)


def db_bytes(tmp_path: Path) -> int:
    return sum(path.stat().st_size for path in tmp_path.glob("node.db*"))


# -- item 1: answers and streams are bounded ------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_an_answer_over_max_result_bytes_fails_the_job(client: TestClient, tmp_path: Path, chunked: bool) -> None:
    job = await run_job(client, {"huge": 64 * 1024 * 1024, "chunked": chunked})
    assert job["status"] == "failed"
    assert job["result"]["error"] == f"container answer is larger than jobs.max_result_bytes ({LIMIT} bytes)"
    assert db_bytes(tmp_path) < 8 * 1024 * 1024  # only the reason was stored
    # An answer within the limit still succeeds, on the same service.
    job = await run_job(client, {"huge": LIMIT - 2})
    assert job["status"] == "success" and len(job["result"]["output"]) == LIMIT - 2


async def read_stream(client: TestClient, data: Any, container: str = "plain") -> tuple[str, bytes]:
    response = await client.post("/api/jobs/stream", json={"containers": [container], "data": data})
    assert response.status == 200, await response.text()
    body = await response.read()
    job_id, _, output = body.partition(b"\n")
    return job_id.decode(), output


async def final(client: TestClient, job_id: str) -> dict[str, Any]:
    for _ in range(100):
        [job] = await (await client.get("/api/jobs", params={"id": job_id})).json()
        if job["status"] != "running":
            return job
        await asyncio.sleep(0.05)
    raise AssertionError("the stream job never finished")


async def test_a_stream_over_max_stream_bytes_ends_and_fails(client: TestClient, tmp_path: Path) -> None:
    job_id, output = await read_stream(client, {"stream_bytes": 64 * 1024 * 1024})
    assert 0 < len(output) <= LIMIT  # relayed up to the bound, not beyond
    job = await final(client, job_id)
    assert job["status"] == "failed"
    assert job["result"]["error"] == f"Container stream is longer than jobs.max_stream_bytes ({LIMIT} bytes)"
    assert db_bytes(tmp_path) < 8 * 1024 * 1024


async def test_a_stream_over_max_stream_seconds_ends_and_fails(client: TestClient) -> None:
    started = asyncio.get_running_loop().time()
    job_id, output = await read_stream(client, {"drip": 30})  # never silent for long, never ending
    took = asyncio.get_running_loop().time() - started
    assert 1.4 <= took < 10, took
    assert output.startswith(b"...")
    job = await final(client, job_id)
    assert job["status"] == "failed"
    assert job["result"]["error"] == "Container stream lasted longer than jobs.max_stream_seconds (1.5s)"


# -- item 2 (answers that can never be stored) and item 4's output side --------


@pytest.mark.parametrize(
    ("raw", "what"),
    [
        ('{"score": NaN}', "NaN"),
        ("[Infinity, 1]", "Infinity"),
        ('{"x": -Infinity}', "-Infinity"),
        ('"\\ud800"', "a lone UTF-16 surrogate"),
        ('{"\\udfff": 1}', "a lone UTF-16 surrogate"),
    ],
)
async def test_output_that_is_not_standard_json_fails_the_job(client: TestClient, raw: str, what: str) -> None:
    job = await run_job(client, {"raw": raw})
    assert job["status"] == "failed", job
    assert job["result"]["error"] == (
        f"container output is not standard JSON (it holds {what}), so it cannot be stored or sent"
    )


async def test_escaped_surrogate_pairs_are_fine(client: TestClient) -> None:
    job = await run_job(client, {"raw": '{"emoji": "\\ud83d\\ude00"}'})
    assert job["status"] == "success"
    assert job["result"]["output"] == {"emoji": "\U0001f600"}


# -- item 5: configured secrets never leave the node ---------------------------


async def test_a_reflected_bearer_token_is_redacted_from_the_result(client: TestClient) -> None:
    job = await run_job(client, {"reflect": True}, container="hostile")
    assert job["status"] == "success"
    assert job["result"]["output"]["headers"]["Authorization"] == "Bearer [REDACTED]"
    assert BEARER not in json.dumps(job)
    response = await client.get("/api/jobs", params={"id": job["id"], "intermediate": "true"})
    assert BEARER not in await response.text()


async def test_a_reflected_bearer_token_is_redacted_across_a_chain(client: TestClient) -> None:
    response = await client.post("/api/jobs", json={"containers": ["hostile", "plain"], "data": {"reflect": True}})
    job_id = (await response.json())["id"]
    for _ in range(200):
        response = await client.get("/api/jobs", params={"id": job_id, "intermediate": "true"})
        text = await response.text()
        [job] = json.loads(text)
        if job["status"] != "running":
            break
        await asyncio.sleep(0.05)
    assert job["status"] == "success", job
    assert BEARER not in text
    assert job["intermediate"][0]["output"]["headers"]["Authorization"] == "Bearer [REDACTED]"


async def test_a_reflected_bearer_token_is_redacted_from_a_stream(client: TestClient) -> None:
    job_id, output = await read_stream(client, {"reflect": True}, container="hostile")
    assert output == b"you sent: Bearer [REDACTED] (end)"  # cut across five-byte chunks on the way
    job = await final(client, job_id)
    assert job["status"] == "success"
    assert job["result"]["output"] == {"output": "you sent: Bearer [REDACTED] (end)"}


async def test_a_reflected_bearer_token_is_redacted_from_resources(client: TestClient) -> None:
    response = await client.get("/resources")
    text = await response.text()
    assert response.status == 200
    assert BEARER not in text
    assert json.loads(text)["hostile"] == {"reflected": "Bearer [REDACTED]"}


# -- item 11: chains have a length limit ---------------------------------------


async def test_a_chain_over_max_chain_length_gets_400(client: TestClient) -> None:
    too_long = {"containers": ["plain"] * 4, "data": {}}
    expected = {
        "error": "Too many containers in the chain: at most 3 (jobs.max_chain_length)",
        "params": {"limit": 3, "containers": 4},
    }
    for path in ("/api/jobs", "/api/jobs/stream"):
        response = await client.post(path, json=too_long)
        assert (response.status, await response.json()) == (400, expected), path
    huge = {"containers": ["plain"] * 10_000, "data": {}}
    response = await client.post("/api/jobs", json=huge)
    assert response.status == 400
    assert (await response.json())["params"] == {"limit": 3, "containers": 10_000}
    # A batch answers per item.
    response = await client.post("/api/jobs/batch", json=[too_long, {"containers": ["plain"] * 3, "data": {}}])
    answers = await response.json()
    assert response.status == 200
    assert answers[0] == expected
    assert set(answers[1]) == {"id"}
    response = await client.get("/api/jobs", params={})
    assert await response.json() == [answers[1]["id"]]  # nothing stored for the refused item
