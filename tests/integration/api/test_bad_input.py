"""Bad input gets a clear JSON error, never a 500, and stored data stays intact."""

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from node.app import build_app
from node.config import parse_config
from tests.support.processes import node_config, service_process


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    with service_process("hello-world") as url:
        yield url


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path, echo_url: str) -> TestClient:
    config = parse_config(
        node_config(tmp_path, [{"id": "echo", "url": echo_url}], server={"max_body_bytes": 1024}),
        environ={},
    )
    return await aiohttp_client(build_app(config))


@pytest.fixture
async def roomy_client(aiohttp_client: Any, tmp_path: Path, echo_url: str) -> TestClient:
    """The same node with room for bodies of a few KB."""
    config = parse_config(node_config(tmp_path, [{"id": "echo", "url": echo_url}]), environ={})
    return await aiohttp_client(build_app(config))


BAD_REQUESTS = [
    ("POST", "/api/jobs", b"{not json", 400, "Malformed JSON body"),
    ("POST", "/api/jobs", b"", 400, "Request body is empty"),
    ("POST", "/api/jobs", b"\xff\xfe\x00", 400, "not UTF-8"),
    ("POST", "/api/jobs", b"[1, 2]", 400, "expected a JSON object, got list"),
    ("POST", "/api/jobs", b'{"containers": "echo", "data": {}}', 400, "field 'containers'"),
    ("POST", "/api/jobs", b'{"containers": ["echo"]}', 400, "field 'data': missing"),
    ("POST", "/api/jobs", b'{"containers": ["nope"], "data": {}}', 405, "Container not supported"),
    ("POST", "/api/jobs", b'{"containers": [], "data": {}}', 405, "No containers specified"),
    (
        "POST",
        "/api/jobs",
        b'{"containers": ["echo"], "data": {}, "requires_proof": "no"}',
        400,
        "field 'requires_proof'",
    ),
    ("POST", "/api/jobs", b'{"subscription": {"owner": 1}, "signature": {}}', 400, "Invalid delegated subscription"),
    ("POST", "/api/jobs", b'{"containers": ["echo"], "data": "' + b"x" * 2000 + b'"}', 413, "Request body too large"),
    ("POST", "/api/jobs/batch", b'{"containers": ["echo"], "data": {}}', 400, "Expected a list"),
    ("POST", "/api/jobs/batch", b'[{"containers": ["echo"], "data": {}}, {"data": 1}]', 400, "Item 1"),
    ("POST", "/api/jobs/stream", b'{"containers": ["nope"], "data": {}}', 405, "Container not supported"),
    ("POST", "/api/jobs/stream", b'"just a string"', 400, "expected a JSON object"),
    ("PUT", "/api/status", b'{"id": "x", "status": "done", "containers": ["echo"]}', 400, "Status is invalid"),
    ("PUT", "/api/status", b'{"status": "running", "containers": ["echo"]}', 400, "field 'id': missing"),
    ("GET", "/api/nothing", b"", 404, "Not found"),
    ("DELETE", "/api/jobs", b"", 405, "Method not allowed"),
    ("PATCH", "/health", b"", 405, "Method not allowed"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "message"), BAD_REQUESTS)
async def test_clear_json_error(
    client: TestClient, method: str, path: str, body: bytes, status: int, message: str
) -> None:
    response = await client.request(method, path, data=body, headers={"Content-Type": "application/json"})
    assert response.status == status
    assert response.content_type == "application/json"
    payload = await response.json()
    assert isinstance(payload, dict) and message in payload["error"], payload


async def test_stored_jobs_survive_a_barrage_of_bad_input(client: TestClient) -> None:
    accepted = await (await client.post("/api/jobs", json={"containers": ["echo"], "data": {"keep": "me"}})).json()
    for method, path, body, _, _ in BAD_REQUESTS:
        response = await client.request(method, path, data=body)
        assert response.status < 500
    for _ in range(50):
        [result] = await (await client.get(f"/api/jobs?id={accepted['id']}")).json()
        if result["status"] != "running":
            break
    assert result == {
        "id": accepted["id"],
        "status": "success",
        "result": {"container": "echo", "output": {"keep": "me"}},
    }
    assert await (await client.get("/api/jobs")).json() == [accepted["id"]]


async def test_non_object_data_is_accepted_and_echoed(client: TestClient) -> None:
    # The reference answers 500 for a non-object `data`; the CLI may send lists or strings.
    for data in ([1, 2], "text", 3, None):
        response = await client.post("/api/jobs", data=json.dumps({"containers": ["echo"], "data": data}))
        assert response.status == 200, await response.text()


async def test_openapi_document_is_served(client: TestClient) -> None:
    document = await (await client.get("/openapi.json")).json()
    assert document["openapi"].startswith("3.")
    assert {"/health", "/info", "/resources", "/api/jobs", "/api/jobs/batch", "/api/jobs/stream", "/api/status"} <= set(
        document["paths"]
    )
    assert "JobRequestBody" in document["components"]["schemas"]


NON_STANDARD_BODIES = [
    (b'{"containers": ["echo"], "data": {"n": ' + b"1" * 5000 + b"}}", "an integer has more than 4300 digits"),
    (b'{"containers": ["echo"], "data": "\\ud800"}', "the string at 'data' holds a lone UTF-16 surrogate"),
    (b'{"containers": ["echo"], "data": [NaN]}', "NaN is not standard JSON"),
    (b'{"containers": ["echo"], "data": Infinity}', "Infinity is not standard JSON"),
    (b'{"containers": ["echo"], "data": -Infinity}', "-Infinity is not standard JSON"),
    (b'{"containers": ["echo"], "data": 1e400}', "too large for a double"),
]


@pytest.mark.parametrize(("body", "message"), NON_STANDARD_BODIES)
@pytest.mark.parametrize("path", ["/api/jobs", "/api/jobs/stream"])
async def test_json_that_cannot_be_stored_or_written_back_is_a_400(
    roomy_client: TestClient, path: str, body: bytes, message: str
) -> None:
    response = await roomy_client.post(path, data=body, headers={"Content-Type": "application/json"})
    assert response.status == 400
    assert message in (await response.json())["error"]
    assert await (await roomy_client.get("/api/jobs")).json() == []


async def test_a_batch_answers_a_lone_surrogate_per_item_and_stores_the_rest(roomy_client: TestClient) -> None:
    body = (
        b'[{"containers": ["echo"], "data": {"a": 1}},'
        b' {"containers": ["echo"], "data": {"t": "x\\udfffy"}},'
        b' {"containers": ["echo"], "data": {"b": 2}}]'
    )
    response = await roomy_client.post("/api/jobs/batch", data=body, headers={"Content-Type": "application/json"})
    assert response.status == 200
    first, refused, last = await response.json()
    assert refused == {
        "error": "Invalid JSON text: the string at 'data.t' holds a lone UTF-16 surrogate, which is not Unicode text",
        "params": {"field": "data.t"},
    }
    assert sorted(await (await roomy_client.get("/api/jobs")).json()) == sorted([first["id"], last["id"]])


async def test_gzip_declared_on_a_body_that_is_not_gzip_is_a_400(roomy_client: TestClient) -> None:
    response = await roomy_client.post(
        "/api/jobs",
        data=b'{"containers": ["echo"], "data": {}}',
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert response.status == 400
    assert (await response.json())["error"] == "Request body could not be read: Can not decode content-encoding: gzip"


async def test_a_huge_but_allowed_integer_comes_back_exact(roomy_client: TestClient) -> None:
    # Up to Python's 4,300-digit limit, parsed, stored, sent to the service and returned exact.
    digits = "9" * 4300
    body = f'{{"containers": ["echo"], "data": {{"n": {digits}, "neg": -{digits}}}}}'
    response = await roomy_client.post("/api/jobs", data=body, headers={"Content-Type": "application/json"})
    accepted = await response.json()
    for _ in range(100):
        raw = await (await roomy_client.get(f"/api/jobs?id={accepted['id']}")).read()
        if b'"running"' not in raw:
            break
        await asyncio.sleep(0.05)
    assert f'"output":{{"n":{digits},"neg":-{digits}}}'.encode() in raw
