"""One test (or more) per trap of client-contract.md §10, over real HTTP against a real node process.

The node runs as `python -m node run` on 127.0.0.1 with the hello-world service as a local
process, and tests talk to it with plain aiohttp sessions, opened per call as the client does.
Traps about the client itself are checked with the real client in tests/e2e:

* trap 13 (CLI `--requires-proof` takes a value; `--rpc-url`, not `--rpc_url`):
  tests/e2e/test_client_cli.py::test_trap_13_requires_proof_takes_a_value_and_rpc_url_has_a_dash
* trap 14 (PRIVATE_KEY is a file path for `sub`):
  tests/e2e/test_client_cli.py::test_sub_private_key_env_is_a_file_path
* trap 15 (the 1.4.0 wheel pins a missing infernet-ml; install with --no-deps):
  scripts/client-venv.sh, and tests/e2e/test_client_cli.py::test_trap_15_wheel_metadata_pins_a_missing_infernet_ml
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from node.api.client_ip import normalise, resolve
from node.chain.containers_lookup import ContainerLookup, containers_hash
from node.config import ServerConfig
from node.jobs.errors import InvalidRequest
from tests.support.processes import NodeProcess, free_port, node_config, running_node, service_process
from tests.support.vectors import delegated_body

MiB = 1024 * 1024
MAX_BODY = 4 * MiB
# aiohttp's check for a JSON body (ClientResponse.json): anything else is a ContentTypeError.
JSON_CONTENT_TYPE = re.compile(r"^application/(?:[\w.+-]+?\+)?json")
PROXY_HEADER = "X-Forwarded-For"
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"

# client-contract.md §5.3: a delegated subscription exactly as the real client posts it.
DELEGATED_BODY: dict[str, Any] = delegated_body()


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    with service_process("hello-world") as url:
        yield url


@pytest.fixture(scope="module")
def hang_url() -> Iterator[str]:
    """A port that accepts connections and never answers (a hung service)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def _containers(echo: str, hang: str) -> list[dict[str, Any]]:
    return [
        {"id": "echo", "url": echo, "external": True},
        {"id": "inner", "url": echo, "external": False},
        {"id": "proofy", "url": echo, "external": True, "generates_proofs": True},
        {"id": "restricted", "url": echo, "external": True, "allowed_ips": ["10.0.0.0/8"]},
        {"id": "dead", "url": f"http://127.0.0.1:{free_port()}", "external": True},
        # Its jobs hang until this timeout, then fail.
        {"id": "hang", "url": hang, "external": True, "timeout": 5},
    ]


@pytest.fixture(scope="module")
def node(echo_url: str, hang_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """Chain disabled, 4 MiB bodies, and 127.0.0.1 trusted as a proxy (so X-Forwarded-For can
    stand in for other client IPs: only a header, no traffic goes to those addresses)."""
    workdir = tmp_path_factory.mktemp("traps-node")
    config = node_config(
        workdir,
        _containers(echo_url, hang_url),
        server={"max_body_bytes": MAX_BODY, "trusted_proxies": ["127.0.0.1/32"]},
    )
    with running_node(config, workdir) as process:
        yield process


@pytest.fixture(scope="module")
def limited_node(echo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    workdir = tmp_path_factory.mktemp("traps-limited")
    config = node_config(
        workdir,
        [{"id": "echo", "url": echo_url, "external": True}],
        server={"rate_limit": {"num_requests": 2, "period": 60}},
    )
    with running_node(config, workdir) as process:
        yield process


@pytest.fixture
def url(node: NodeProcess) -> str:
    return node.url


# -- helpers -----------------------------------------------------------------------------------


class Answer:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")

    def json(self) -> Any:
        assert JSON_CONTENT_TYPE.match(self.content_type), f"not JSON: {self.content_type!r} {self.body[:200]!r}"
        return json.loads(self.body)

    def error(self) -> dict[str, Any]:
        """A style-B error: JSON content type and a JSON *object* with an `error` string."""
        assert self.status >= 400, (self.status, self.body[:300])
        body = self.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str), body
        return body

    def __repr__(self) -> str:
        return f"<{self.status} {self.content_type} {self.body[:300]!r}>"


async def call(
    method: str,
    url: str,
    body: Any = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> Answer:
    """One request in a fresh session, like the client (no keep-alive across calls)."""
    kwargs: dict[str, Any] = {"headers": headers or {}, "timeout": aiohttp.ClientTimeout(total=timeout)}
    if raw is not None:
        kwargs["data"] = raw
        kwargs["headers"] = {"Content-Type": "application/json", **kwargs["headers"]}
    elif body is not None:
        kwargs["json"] = body
    async with aiohttp.ClientSession() as session, session.request(method, url, **kwargs) as response:
        return Answer(response.status, response.headers, await response.read())


async def submit(url: str, containers: list[str], data: Any = None, headers: dict[str, str] | None = None) -> str:
    answer = await call("POST", f"{url}/api/jobs", {"containers": containers, "data": data or {}}, headers=headers)
    assert answer.status == 200, answer
    return str(answer.json()["id"])


async def results(
    url: str, ids: list[str], intermediate: bool = False, headers: dict[str, str] | None = None
) -> list[Any]:
    query = f"id={'&id='.join(ids)}" + ("&intermediate=true" if intermediate else "")
    answer = await call("GET", f"{url}/api/jobs?{query}", headers=headers)
    assert answer.status == 200, answer
    return list(answer.json())


async def finished(
    url: str, ids: list[str], deadline_s: float = 15.0, headers: dict[str, str] | None = None
) -> list[Any]:
    end = time.monotonic() + deadline_s
    while True:
        found = await results(url, ids, headers=headers)
        if len(found) == len(ids) and all(job["status"] != "running" for job in found):
            return found
        assert time.monotonic() < end, f"still running after {deadline_s}s: {found}"
        await asyncio.sleep(0.05)


async def record(url: str, job_id: str, status: str, headers: dict[str, str] | None = None) -> Answer:
    return await call(
        "PUT", f"{url}/api/status", {"id": job_id, "status": status, "containers": ["echo"]}, headers=headers
    )


def as_ip(ip: str) -> dict[str, str]:
    """Requests that the node (trusting 127.0.0.1 as a proxy) attributes to `ip`."""
    return {PROXY_HEADER: ip}


# -- traps -------------------------------------------------------------------------------------


async def test_trap_01_ids_filter_accepts_pending_and_status(url: str) -> None:
    who = as_ip("198.51.100.1")  # a client of its own, so other tests' jobs don't show up
    done = await submit(url, ["echo"], headers=who)
    await finished(url, [done], headers=who)
    running = str(uuid.uuid4())
    # /api/status is local-only, so this one is recorded for 127.0.0.1 ...
    assert (await record(url, running, "running")).status == 200

    async def ids(query: str, headers: dict[str, str] | None) -> list[str]:
        answer = await call("GET", f"{url}/api/jobs{query}", headers=headers)
        assert answer.status == 200, answer
        return list(answer.json())

    assert await ids("?pending=false", who) == [done]
    assert await ids("?status=completed", who) == [done]
    assert await ids("?pending=true", who) == []
    assert await ids("?status=pending", who) == []
    assert await ids("", who) == [done]
    assert await ids("?status=all", who) == [done]
    # ... and 127.0.0.1 sees it as pending through either spelling.
    assert running in await ids("?pending=true", None)
    assert running in await ids("?status=pending", None)
    assert running in await ids("?status=PENDING", None)
    assert running not in await ids("?pending=false", None)
    assert running not in await ids("?status=completed", None)
    assert running in await ids("", None)


async def test_trap_02_intermediate_results_key(url: str) -> None:
    chained = await submit(url, ["echo", "inner"], {"v": 2})
    await finished(url, [chained])
    [plain] = await results(url, [chained])
    assert plain == {"id": chained, "status": "success", "result": {"container": "inner", "output": {"v": 2}}}
    [full] = await results(url, [chained], intermediate=True)
    assert full["intermediate_results"] == [{"container": "echo", "output": {"v": 2}}]
    if "intermediate" in full:  # optional alias (the client's type name); must agree
        assert full["intermediate"] == full["intermediate_results"]
    # Only exactly intermediate=true asks for them; the client never sends false.
    answer = await call("GET", f"{url}/api/jobs?id={chained}&intermediate=false")
    assert "intermediate_results" not in answer.json()[0]


async def test_trap_03_info_uses_pending_not_pending_jobs(url: str) -> None:
    answer = await call("GET", f"{url}/info")
    assert answer.status == 200
    info = answer.json()
    assert "pending_jobs" not in info
    assert set(info["pending"]) == {"offchain", "onchain"}
    assert all(isinstance(value, int) and value >= 0 for value in info["pending"].values())
    assert info["chain"] == {"enabled": False, "address": ""}
    assert {"echo", "inner", "proofy", "restricted"} <= {c["id"] for c in info["containers"]}
    for container in info["containers"]:
        assert {"id", "description", "external", "image"} <= set(container)


async def test_trap_04_job_status_values(url: str) -> None:
    ok = await submit(url, ["echo"])
    bad = await submit(url, ["dead"])
    running = str(uuid.uuid4())
    assert (await record(url, running, "running")).status == 200
    done = {job["id"]: job for job in await finished(url, [ok, bad])}
    assert done[ok]["status"] == "success"
    assert done[bad]["status"] == "failed"
    assert set(done[bad]["result"]) == {"container", "error"} and done[bad]["result"]["container"] == "dead"
    [pending] = await results(url, [running])
    assert pending == {"id": running, "status": "running", "result": None}


async def test_trap_05_subscription_schema(url: str) -> None:
    # The real 11-field schema parses; this node has no chain, which is a clean 405.
    answer = await call("POST", f"{url}/api/jobs", DELEGATED_BODY)
    assert answer.status == 405, answer
    assert answer.error()["error"] == "Chain not enabled"
    # The obsolete schema of openapi/docs is a JSON client error naming a field, not a crash.
    obsolete = {
        "signature": DELEGATED_BODY["signature"],
        "subscription": {
            "owner": DELEGATED_BODY["subscription"]["owner"],
            "active_at": 0,
            "period": 3,
            "frequency": 2,
            "redundancy": 2,
            "max_gas_price": 1000,
            "max_gas_limit": 100000,
            "container_id": "echo",
            "inputs": "0x",
            "lazy": False,
            "verifier": DELEGATED_BODY["subscription"]["verifier"],
            "payment_amount": 0,
            "payment_token": DELEGATED_BODY["subscription"]["payment_token"],
            "wallet": DELEGATED_BODY["subscription"]["wallet"],
        },
        "data": {},
    }
    answer = await call("POST", f"{url}/api/jobs", obsolete)
    assert answer.status == 400, answer
    assert "subscription.containers" in answer.error()["error"]
    # `containers` is a hash string, not a list.
    as_list = json.loads(json.dumps(DELEGATED_BODY))
    as_list["subscription"]["containers"] = ["echo"]
    answer = await call("POST", f"{url}/api/jobs", as_list)
    assert answer.status == 400, answer
    assert "subscription.containers" in answer.error()["error"]


async def test_trap_06_big_integers_stay_exact(url: str) -> None:
    # r, s and payment_amount up to 2^256 - 1 parse (the 405 comes after parsing).
    big = json.loads(json.dumps(DELEGATED_BODY))
    big["subscription"]["payment_amount"] = 2**256 - 1
    big["signature"]["r"] = 2**256 - 1
    answer = await call("POST", f"{url}/api/jobs", raw=json.dumps(big).encode())
    assert answer.status == 405 and answer.error()["error"] == "Chain not enabled", answer
    too_big = json.loads(json.dumps(big))
    too_big["subscription"]["payment_amount"] = 2**256
    answer = await call("POST", f"{url}/api/jobs", raw=json.dumps(too_big).encode())
    assert answer.status == 400 and "payment_amount" in answer.error()["error"], answer
    # Job data with huge integers comes back exactly, digit for digit.
    data = {"n": 2**255 + 12345, "m": -(2**200)}
    job = await submit(url, ["echo"], data)
    await finished(url, [job])
    answer = await call("GET", f"{url}/api/jobs?id={job}")
    assert str(2**255 + 12345).encode() in answer.body and str(-(2**200)).encode() in answer.body
    assert answer.json()[0]["result"]["output"] == data


GUARDIAN_CASES = [
    ({"containers": [], "data": {}}, "No containers specified", {}),
    ({"containers": ["bad"], "data": {}}, "Container not supported", {"container": "bad"}),
    ({"containers": ["echo", "bad"], "data": {}}, "Container not supported", {"container": "bad"}),
    ({"containers": ["inner", "echo"], "data": {}}, "First container must be external", {"first_container": "inner"}),
    (
        {"containers": ["echo"], "data": {}, "requires_proof": True},
        "Container does not generate proof",
        {"container": "echo"},
    ),
    (
        {"containers": ["restricted"], "data": {}},
        "Container not allowed for address",
        {"container": "restricted", "address": "127.0.0.1"},
    ),
]


GUARDIAN_IDS = [case[1] for case in GUARDIAN_CASES]


# The reference runs the guardian over the whole message on /api/jobs/stream too (its
# filter_create_job decorator), and only then streams containers[0].
@pytest.mark.parametrize("path", ["/api/jobs", "/api/jobs/stream"])
@pytest.mark.parametrize(("job", "message", "params"), GUARDIAN_CASES, ids=GUARDIAN_IDS)
async def test_trap_07_guardian_errors_are_405(
    url: str, path: str, job: dict[str, Any], message: str, params: dict[str, Any]
) -> None:
    answer = await call("POST", f"{url}{path}", job)
    assert answer.status == 405, answer
    assert answer.error() == {"error": message, "params": params}


@pytest.mark.parametrize(("job", "message", "params"), GUARDIAN_CASES, ids=GUARDIAN_IDS)
async def test_trap_07_guardian_errors_are_200_per_item_in_a_batch(
    url: str, job: dict[str, Any], message: str, params: dict[str, Any]
) -> None:
    answer = await call("POST", f"{url}/api/jobs/batch", [job, {"containers": ["echo"], "data": {}}])
    assert answer.status == 200, answer
    rejected, accepted = answer.json()
    assert rejected == {"error": message, "params": params}
    assert set(accepted) == {"id"}


async def test_trap_07_allowed_ips_admit_a_matching_client(url: str) -> None:
    # The same container is fine for a client inside 10.0.0.0/8 (an X-Forwarded-For header only).
    job = await submit(url, ["restricted"], {"ok": 1}, headers=as_ip("10.1.2.3"))
    [done] = await finished(url, [job], headers=as_ip("10.1.2.3"))
    assert done["result"] == {"container": "restricted", "output": {"ok": 1}}
    proof = await submit(url, ["proofy"], {"p": 1})
    assert uuid.UUID(proof)


async def test_trap_08_unknown_path_and_wrong_method_are_json(url: str) -> None:
    cases = [
        ("GET", "/nope", 404),
        ("POST", "/api/nope", 404),
        ("GET", "/api/jobs/", 404),
        ("DELETE", "/api/jobs", 405),
        ("GET", "/api/jobs/batch", 405),
        ("GET", "/api/jobs/stream", 405),
        ("GET", "/api/status", 405),
        ("POST", "/health", 405),
    ]
    for method, path, status in cases:
        answer = await call(method, f"{url}{path}")
        assert answer.status == status, (method, path, answer)
        answer.error()


async def test_trap_08_bad_bodies_are_json_objects(url: str) -> None:
    for path in ("/api/jobs", "/api/jobs/batch", "/api/jobs/stream"):
        for raw in (b"", b"{nope", b"null", b"\xff"):
            answer = await call("POST", f"{url}{path}", raw=raw)
            assert 400 <= answer.status < 500, (path, raw, answer)
            answer.error()
    answer = await call("PUT", f"{url}/api/status", raw=b"[]")
    assert 400 <= answer.status < 500, answer
    answer.error()


async def test_trap_08_oversize_body_is_json_413(url: str) -> None:
    answer = await call("POST", f"{url}/api/jobs", raw=b'{"containers": ["echo"], "data": "' + b"x" * MAX_BODY + b'"}')
    assert answer.status == 413, answer
    assert answer.error()["error"] == "Request body too large"


async def test_trap_08_rate_limit_is_json_429(limited_node: NodeProcess) -> None:
    base = limited_node.url
    # 2 requests per 60 s per route and client IP (/health was already polled at start).
    for path, method, body in (("/info", "GET", None), ("/api/jobs", "POST", {"containers": ["echo"], "data": {}})):
        answers = [await call(method, f"{base}{path}", body) for _ in range(3)]
        assert [a.status for a in answers[:2]] == [200, 200], answers
        limited = answers[2]
        assert limited.status == 429, limited
        assert limited.error()["error"] == "Too many requests"
        assert int(limited.headers["Retry-After"]) >= 1
    # /api/status is not rate limited (as in the reference).
    for _ in range(4):
        answer = await record(base, str(uuid.uuid4()), "running")
        assert answer.status == 200, answer


async def _stream_chunks(url: str, text: str) -> tuple[int, list[bytes]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{url}/api/jobs/stream",
            json={"containers": ["echo"], "data": {"prompt": text}, "requires_proof": False},
            timeout=aiohttp.ClientTimeout(total=30),
        ) as response,
    ):
        return response.status, [chunk async for chunk in response.content.iter_any()]


def _check_stream(status: int, chunks: list[bytes], text: str) -> str:
    assert status == 200
    first = chunks[0]
    assert first.endswith(b"\n") and first.count(b"\n") == 1, f"id line merged with output: {first!r}"
    job_id = first.decode().strip()
    assert str(uuid.UUID(job_id)) == job_id
    assert b"".join(chunks[1:]).decode() == text
    return job_id


async def test_trap_09_stream_id_line_arrives_in_its_own_read(url: str) -> None:
    texts = [f"run {n}: the quick brown fox ✓" for n in range(30)]
    ids = []
    for text in texts:
        status, chunks = await _stream_chunks(url, text)
        ids.append(_check_stream(status, chunks, text))
    # And with 30 streams at once, so the client side is busy when the output comes.
    outcomes = await asyncio.gather(*(_stream_chunks(url, text) for text in texts))
    ids += [_check_stream(status, chunks, text) for (status, chunks), text in zip(outcomes, texts, strict=True)]
    assert len(set(ids)) == 60
    stored = await finished(url, ids[:5])
    assert [job["result"] for job in stored] == [
        {"container": "echo", "output": {"output": text}} for text in texts[:5]
    ]


async def test_trap_09_stream_errors_before_the_start_are_json(url: str) -> None:
    answer = await call("POST", f"{url}/api/jobs/stream", {"containers": ["dead"], "data": {}})
    assert answer.status != 200 and answer.status >= 400, answer
    body = answer.error()
    assert body["params"]["container"] == "dead"
    failed = await finished(url, [body["params"]["job_id"]])
    assert failed[0]["status"] == "failed"
    answer = await call("POST", f"{url}/api/jobs/stream", DELEGATED_BODY)
    assert answer.status == 405, answer
    assert answer.error()["error"] == "Streaming only supported for OffchainJob requests."


async def test_trap_10_job_is_visible_immediately(url: str) -> None:
    for n in range(20):
        job = await submit(url, ["echo"], {"n": n})
        [found] = await results(url, [job])
        assert found["id"] == job and found["status"] in ("running", "success"), found
    hung = await submit(url, ["hang"])  # cannot finish yet, so it must already be recorded as running
    assert await results(url, [hung]) == [{"id": hung, "status": "running", "result": None}]
    answer = await call("POST", f"{url}/api/jobs/batch", [{"containers": ["echo"], "data": {}}] * 3)
    ids = [item["id"] for item in answer.json()]
    assert [job["id"] for job in await results(url, ids)] == ids


async def test_trap_11_quick_endpoints_answer_within_the_client_timeouts(url: str) -> None:
    # The client gives /health, /info, /resources 1 s in total, and /resources fans out to every
    # container, including one that hangs.
    for path in ("/health", "/info", "/resources", "/resources?model_id=hello-world"):
        started = time.monotonic()
        answer = await call("GET", f"{url}{path}", timeout=1.0)
        elapsed = time.monotonic() - started
        assert answer.status == 200 and elapsed < 1.0, (path, elapsed, answer)
    resources = (await call("GET", f"{url}/resources")).json()
    assert "echo" in resources and "hang" not in resources and "dead" not in resources
    # A job for a hung container is accepted at once (the client gives POST /api/jobs 5 s).
    started = time.monotonic()
    await submit(url, ["hang"])
    assert time.monotonic() - started < 1.0


async def test_trap_12_status_endpoint(url: str) -> None:
    job_id = str(uuid.uuid4())
    # The docs' curl omits `data`; the client sends it. Both work; success is a JSON body.
    answer = await call("PUT", f"{url}/api/status", {"id": job_id, "status": "running", "containers": ["echo"]})
    assert answer.status == 200 and JSON_CONTENT_TYPE.match(answer.content_type), answer
    answer.json()
    answer = await call(
        "PUT", f"{url}/api/status", {"id": job_id, "status": "failed", "containers": ["echo"], "data": {"x": 1}}
    )
    assert answer.status == 200, answer
    answer.json()
    assert await results(url, [job_id]) == [{"id": job_id, "status": "failed", "result": None}]
    answer = await record(url, job_id, "bogus")
    assert answer.status == 400 and answer.error()["error"] == "Status is invalid", answer
    answer = await call("PUT", f"{url}/api/status", {"id": job_id, "status": "running"})
    assert 400 <= answer.status < 600, answer
    answer.error()
    # Local callers only.
    answer = await record(url, job_id, "running", headers=as_ip("203.0.113.5"))
    assert answer.status == 403 and answer.error()["error"] == "Unauthorized", answer


def test_trap_16_containers_hash() -> None:
    vectors = {
        ("echo",): "e6bc11afcedb3f26d7fb181f4c6dd2e98781d79f965a4777058412b58f788ec8",
        ("a", "b"): "0deeac3a841600829c99f8116bb997da266d4c47a720b00e6ace9594de82dd54",
        ("b", "a"): "73ede0fe4b30aa8027db6b64635734b367776b05dc0bcf986c744c6bcbf6892e",
    }
    for containers, digest in vectors.items():
        assert containers_hash(containers).hex() == digest
    lookup = ContainerLookup(["a", "b", "echo"])
    for containers, digest in vectors.items():
        # hexbytes < 1 gives 0x-prefixed text, hexbytes >= 1 none; any case.
        for spelling in ("0x" + digest, digest, "0X" + digest.upper(), bytes.fromhex(digest)):
            assert lookup.containers(spelling) == list(containers)
    assert lookup.containers("0x" + "00" * 32) == []
    assert lookup.containers("0x1234") == []


async def test_trap_17_delegated_errors_are_clean_json_405(url: str) -> None:
    # Chain-level refusals (expired signature, unknown container set) need a chain: see tests/chain.
    answer = await call("POST", f"{url}/api/jobs", DELEGATED_BODY)
    assert answer.status == 405, answer
    body = answer.error()
    assert body["error"] == "Chain not enabled"
    assert "params" not in body or isinstance(body["params"], dict)


async def test_trap_18_batch(url: str) -> None:
    answer = await call("POST", f"{url}/api/jobs/batch", {"containers": ["echo"], "data": {}})
    assert answer.status == 400 and answer.error()["error"] == "Expected a list", answer
    # One malformed item fails the whole batch, with a JSON object.
    answer = await call("POST", f"{url}/api/jobs/batch", [{"containers": ["echo"], "data": {}}, {"data": 1}])
    assert 400 <= answer.status < 600, answer
    answer.error()
    # Items answer in order; a delegated item answers {} on a chain node, a per-item error here.
    answer = await call(
        "POST",
        f"{url}/api/jobs/batch",
        [{"containers": ["echo"], "data": {}}, DELEGATED_BODY, {"containers": ["bad"], "data": {}}],
    )
    assert answer.status == 200, answer
    first, delegated, bad = answer.json()
    assert set(first) == {"id"}
    assert delegated["error"] == "Chain not enabled"
    assert bad == {"error": "Container not supported", "params": {"container": "bad"}}
    assert (await call("POST", f"{url}/api/jobs/batch", [])).json() == []


async def test_trap_19_data_of_any_json_type(url: str) -> None:
    values = [[1, 2], "text", 42, 1.5, True, None, {"nested": [{}]}]
    ids: list[str] = []
    for value in values:
        answer = await call("POST", f"{url}/api/jobs", {"containers": ["echo"], "data": value})
        assert answer.status == 200, (value, answer)
        ids.append(answer.json()["id"])
    done = await finished(url, ids)
    assert [job["result"]["output"] for job in done] == values


def test_trap_20_normalise_and_resolve() -> None:
    assert normalise("::ffff:127.0.0.1") == "127.0.0.1"
    assert normalise("::FFFF:10.1.2.3") == "10.1.2.3"
    assert normalise("127.0.0.1") == "127.0.0.1"
    assert normalise("::1") == "::1"
    assert normalise("0:0:0:0:0:0:0:1") == "::1"
    assert normalise("fe80::1%lo") == "fe80::1"
    assert normalise("not-an-ip") == "not-an-ip"

    assert resolve("::ffff:127.0.0.1", None, ()) == "127.0.0.1"
    assert resolve("127.0.0.1", "203.0.113.9", ()) == "127.0.0.1"  # no trusted proxies: header ignored
    # Parsed as at load.
    trusted = ServerConfig.model_validate({"trusted_proxies": ["127.0.0.1/32", "10.0.0.0/8"]}).trusted_proxies
    assert resolve("::ffff:127.0.0.1", "203.0.113.9", trusted) == "203.0.113.9"
    assert resolve("127.0.0.1", "198.51.100.1, 203.0.113.9, 10.0.0.2", trusted) == "203.0.113.9"
    assert resolve("127.0.0.1", "::ffff:203.0.113.9", trusted) == "203.0.113.9"
    assert resolve("127.0.0.1", "garbage", trusted) == "127.0.0.1"
    assert resolve("127.0.0.1", "10.0.0.3", trusted) == "10.0.0.3"  # all hops trusted: the farthest
    assert resolve("192.0.2.1", "203.0.113.9", trusted) == "192.0.2.1"  # untrusted peer: header ignored
    with pytest.raises(InvalidRequest, match="Could not get client IP address"):
        resolve(None, None, ())


async def test_trap_20_jobs_are_scoped_by_client_ip(url: str) -> None:
    job = await submit(url, ["echo"], {"mine": 1})
    assert [found["id"] for found in await finished(url, [job])] == [job]  # 127.0.0.1 -> 127.0.0.1
    assert job in (await call("GET", f"{url}/api/jobs")).json()
    other = as_ip("198.51.100.20")
    assert await results(url, [job], headers=other) == []
    assert job not in (await call("GET", f"{url}/api/jobs", headers=other)).json()
    theirs = await submit(url, ["echo"], headers=other)
    assert await results(url, [theirs]) == []
    assert [found["id"] for found in await finished(url, [theirs], headers=other)] == [theirs]
    # A proxy forwarding an IPv4-mapped address is the same client as the plain address.
    assert [found["id"] for found in await results(url, [theirs], headers=as_ip("::ffff:198.51.100.20"))] == [theirs]


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


class _V6Node(NodeProcess):
    @property
    def url(self) -> str:
        return f"http://[::1]:{self.config['server']['port']}"


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
async def test_trap_20_ipv6_loopback_client(echo_url: str, tmp_path: Path) -> None:
    config = node_config(tmp_path, [{"id": "echo", "url": echo_url}], server={"host": "::1"})
    node = _V6Node(config, tmp_path)
    started = await asyncio.to_thread(node.start)
    try:
        v6 = started.url
        job = await submit(v6, ["echo"], {"v6": True})
        [done] = await finished(v6, [job])
        assert done["result"] == {"container": "echo", "output": {"v6": True}}
        # ::1 is local for /api/status, and the job it records is found from ::1.
        recorded = str(uuid.uuid4())
        assert (await record(v6, recorded, "running")).status == 200
        assert await results(v6, [recorded]) == [{"id": recorded, "status": "running", "result": None}]
    finally:
        await asyncio.to_thread(node.stop)


async def test_trap_21_body_size(url: str) -> None:
    text = "x" * (2 * MiB)  # over aiohttp's 1 MiB default
    job = await submit(url, ["echo"], {"blob": text})
    [done] = await finished(url, [job])
    assert done["result"]["output"] == {"blob": text}
    answer = await call(
        "POST", f"{url}/api/jobs", raw=json.dumps({"containers": ["echo"], "data": "y" * MAX_BODY}).encode()
    )
    assert answer.status == 413, answer
    body = answer.error()
    assert body["error"] == "Request body too large"
    assert body.get("params", {}).get("max_bytes") == MAX_BODY


async def test_trap_22_results_keep_request_order_and_drop_unknown_ids(url: str) -> None:
    first = await submit(url, ["echo"], {"i": 1})
    second = await submit(url, ["echo"], {"i": 2})
    await finished(url, [first, second])
    running = str(uuid.uuid4())
    assert (await record(url, running, "running")).status == 200
    order = [running, UNKNOWN_ID, second, first]
    assert [job["id"] for job in await results(url, order)] == [running, second, first]
    assert [job["id"] for job in await results(url, [first, running, second])] == [first, running, second]
    # An empty id list (the client sends `?id=`) is an empty answer, not the id list.
    answer = await call("GET", f"{url}/api/jobs?id=")
    assert answer.status == 200 and answer.json() == []


async def test_trap_23_version(url: str) -> None:
    info = (await call("GET", f"{url}/info")).json()
    assert info["version"] == "1.4.0"
