"""containers/openai-proxy end to end, real parts only, all on 127.0.0.1.

Node B serves a chat model (the trivial chat service, tests/support/chat_service.py, as a real
process) on `/v1`, requiring a Gonka signature or an API key (`auth.v1: either`). Node A runs
jobs through the proxy service, run as a real process (`python containers/openai-proxy/app.py`),
which forwards them to B's `/v1` with Gonka signatures or a Bearer key made by
`infernet-node keys create` on B. Jobs reach A through `/api/jobs`, `/api/jobs/stream` and
A's own `/v1` with the openai SDK. B's CALLS_FILE shows what reached B's model.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web
from coincurve import PrivateKey
from openai import OpenAI

from node.auth.bech32 import address_of
from tests.e2e.services import support as services
from tests.support.gonka import gonka_python, run_snippet  # noqa: F401  (fixture)
from tests.support.processes import PYTHON, ROOT, NodeProcess, free_port, node_config, service_process

PROXY_APP = ROOT / "containers" / "openai-proxy" / "app.py"
CLI = str(Path(sys.executable).parent / "infernet-node")

B_ADDRESS = address_of(PrivateKey(bytes.fromhex("5e" * 32)).public_key.format())
PROXY_KEY_HEX = "d15ea5e" + "9" * 57  # recognisable: a test greps logs and answers for it
PROXY_ADDRESS = address_of(PrivateKey(bytes.fromhex(PROXY_KEY_HEX)).public_key.format())
MESSAGES = [{"role": "user", "content": "hello there"}]
ANSWER = "You said: hello there"


def calls(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def proxy_process(env: dict[str, str], log: Path) -> AbstractContextManager[str]:
    """The proxy as a process; its output goes to `log` (a test reads it for secrets). Nothing
    from the developer's shell reaches it: only what the test gives it."""
    return service_process(
        "openai-proxy", {"LOG_LEVEL": "DEBUG", **env}, log=log, drop_env=("UPSTREAM_", "GONKA_", "OPENAI_")
    )


@asynccontextmanager
async def scripted_upstream(
    answer: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """A real HTTP server on 127.0.0.1 answering POST /v1/chat/completions with `answer`; yields its /v1 URL."""
    app = web.Application()
    app.router.add_post("/v1/chat/completions", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        await runner.cleanup()


def post_json(url: str, body: Any, timeout: float = 60) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def run_job(node: NodeProcess, container: str, data: Any) -> dict[str, Any]:
    """A job through A's /api/jobs, polled until it is done."""
    return services.run_job(node, [container], data)


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.calls = tmp / "calls.jsonl"
        self.logs: list[Path] = []
        self.bearer_key = ""
        self.b: NodeProcess
        self.a: NodeProcess

    def log(self, name: str) -> Path:
        path = self.tmp / f"proxy-{name}.log"
        self.logs.append(path)
        return path


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("openai-proxy")
    world = World(tmp)
    with ExitStack() as stack:
        chat = stack.enter_context(service_process("chat", env={"CALLS_FILE": str(world.calls)}))
        (tmp / "b").mkdir()
        world.b = NodeProcess(
            node_config(
                tmp / "b",
                [{"id": "chat", "url": chat, "models": ["tiny"]}],
                auth={"v1": "either", "gonka": {"address": B_ADDRESS}},
            ),
            tmp / "b",
        ).start()
        stack.callback(world.b.stop)
        done = subprocess.run(
            [CLI, "keys", "create", "--name", "proxy", "--workspace", "ws-1", "--config", str(world.b.config_path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        world.bearer_key = done.stdout.strip()
        upstream = f"{world.b.url}/v1"
        gonka = {
            "UPSTREAM_URL": upstream,
            "UPSTREAM_AUTH": "gonka",
            "GONKA_PRIVATE_KEY": PROXY_KEY_HEX,
            "GONKA_TRANSFER_ADDRESS": B_ADDRESS,
        }
        bearer = {
            "UPSTREAM_URL": upstream,
            "UPSTREAM_AUTH": "bearer",
            "UPSTREAM_API_KEY": world.bearer_key,
            "UPSTREAM_WORKSPACE": "ws-1",
            "UPSTREAM_MODEL": "tiny",
        }
        proxies = {
            "gonka": {**gonka, "UPSTREAM_MODEL": "tiny"},
            "bearer": bearer,
            "wrong-workspace": {**bearer, "UPSTREAM_WORKSPACE": "ws-2"},
            "no-auth": {"UPSTREAM_URL": upstream, "UPSTREAM_MODEL": "tiny"},
            "wrong-transfer": {**gonka, "UPSTREAM_MODEL": "tiny", "GONKA_TRANSFER_ADDRESS": PROXY_ADDRESS},
            "unknown-model": {**gonka, "UPSTREAM_MODEL": "no-such-model"},
            "impatient": {**gonka, "UPSTREAM_MODEL": "tiny", "UPSTREAM_TIMEOUT": "1"},
            "unreachable": {**gonka, "UPSTREAM_URL": f"http://127.0.0.1:{free_port()}/v1"},
        }
        containers = []
        for name, env in proxies.items():
            url = stack.enter_context(proxy_process(env, world.log(name)))
            containers.append({"id": name, "url": url, "models": [f"remote-{name}"]})
        (tmp / "a").mkdir()
        world.a = NodeProcess(node_config(tmp / "a", containers), tmp / "a").start()
        stack.callback(world.a.stop)
        yield world


def test_the_proxys_signer_gives_the_official_clients_bytes(gonka_python: Path) -> None:  # noqa: F811
    sys.path.insert(0, str(PROXY_APP.parent))
    from gonka_signing import GonkaSigner

    cases: list[dict[str, Any]] = []
    for index in range(10):
        key = f"{index + 1:02x}" * 32
        body = json.dumps(
            {"model": "m", "messages": [{"role": "user", "content": f"héllo {index}" * index}]}, ensure_ascii=False
        ).encode()
        cases.append({"key": key, "body": body.hex(), "timestamp": 1_780_000_000_000_000_000 + index * 7_919})
    theirs = run_snippet(
        gonka_python,
        """
from gonka_openai.utils import gonka_address, gonka_signature
out = [[gonka_signature(bytes.fromhex(c["body"]), c["key"], c["timestamp"], args["transfer"]), gonka_address(c["key"])]
       for c in args["cases"]]
print(json.dumps(out))
""",
        {"cases": cases, "transfer": B_ADDRESS},
    )
    for case, (signature, address) in zip(cases, theirs, strict=True):
        signer = GonkaSigner(case["key"], B_ADDRESS, clock=itertools.repeat(int(case["timestamp"])).__next__)
        headers = signer.headers(bytes.fromhex(case["body"]))
        assert headers["Authorization"] == signature
        assert headers["X-Requester-Address"] == address


def test_a_job_on_a_gets_bs_answer_through_gonka_signatures(world: World) -> None:
    before = len(calls(world.calls))
    job = run_job(world.a, "gonka", {"model": "remote-gonka", "messages": MESSAGES})
    assert job["status"] == "success", job
    output = job["result"]["output"]
    assert output["object"] == "chat.completion"
    assert output["choices"][0]["message"]["content"] == ANSWER
    assert output["usage"]["total_tokens"] == 9
    assert [c["content"] for c in calls(world.calls)[before:] if c["event"] == "call"] == ["hello there"]
    # B knows who called: the proxy's own gonka address.
    usage = subprocess.run(
        [CLI, "usage", "--config", str(world.b.config_path)], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    assert f"gonka:{PROXY_ADDRESS}" in usage


def test_b_refuses_an_unsigned_proxy(world: World) -> None:
    job = run_job(world.a, "no-auth", {"messages": MESSAGES})
    assert job["status"] == "failed"
    error = job["result"]["error"]
    assert "upstream answered HTTP 401" in error and "HTTP 502" in error, error


def test_a_streamed_job_through_a_relays_bs_chunks(world: World) -> None:
    status, raw = post_json(
        f"{world.a.url}/api/jobs/stream", {"containers": ["gonka"], "data": {"messages": MESSAGES, "stream": False}}
    )
    assert status == 200, raw
    job_id, _, body = raw.partition(b"\n")
    lines = [json.loads(line) for line in body.decode().splitlines() if line]
    assert all(line["object"] == "chat.completion.chunk" for line in lines)
    assert lines[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in lines if c["choices"]) == ANSWER
    assert lines[-2]["choices"][0]["finish_reason"] == "stop"
    assert lines[-1]["choices"] == [] and lines[-1]["usage"]["total_tokens"] == 9  # asked upstream for usage
    assert calls(world.calls)[-1] == {"event": "done", "stream": True, "content": "hello there"}
    assert job_id.decode()


def test_as_v1_with_the_openai_sdk_whole_and_streamed(world: World) -> None:
    client = OpenAI(base_url=f"{world.a.url}/v1", api_key="unused", max_retries=0)
    answer = client.chat.completions.create(model="remote-gonka", messages=MESSAGES)  # type: ignore[arg-type]
    assert answer.choices[0].message.content == ANSWER and answer.usage is not None
    assert answer.usage.total_tokens == 9
    chunks = list(
        client.chat.completions.create(
            model="remote-gonka",
            messages=MESSAGES,  # type: ignore[call-overload]
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 9


def test_a_bearer_key_from_bs_cli_with_its_workspace(world: World) -> None:
    job = run_job(world.a, "bearer", {"messages": MESSAGES})
    assert job["status"] == "success", job
    assert job["result"]["output"]["choices"][0]["message"]["content"] == ANSWER
    refused = run_job(world.a, "wrong-workspace", {"messages": MESSAGES})
    assert refused["status"] == "failed"
    assert "upstream answered HTTP 403" in refused["result"]["error"], refused


def test_upstream_refusals_are_clear_job_errors(world: World) -> None:
    before = len(calls(world.calls))
    job = run_job(world.a, "wrong-transfer", {"messages": MESSAGES})
    assert job["status"] == "failed"
    assert "upstream answered HTTP 401" in job["result"]["error"], job
    assert "wrong_transfer_address" in job["result"]["error"], job
    job = run_job(world.a, "unknown-model", {"messages": MESSAGES})
    assert job["status"] == "failed"
    error = job["result"]["error"]
    assert "upstream answered HTTP 404" in error and "no-such-model" in error, error
    assert len(calls(world.calls)) == before  # B's model was never asked
    # On A's /v1 the same refusals are typed errors: a refused request 400, a failed upstream 502.
    client = OpenAI(base_url=f"{world.a.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="no-such-model"):
        client.chat.completions.create(model="remote-unknown-model", messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(openai.InternalServerError, match="HTTP 401"):
        client.chat.completions.create(model="remote-wrong-transfer", messages=MESSAGES)  # type: ignore[arg-type]
    # A streamed request refused upstream is an error before any chunk.
    status, raw = post_json(
        f"{world.a.url}/api/jobs/stream", {"containers": ["unknown-model"], "data": {"messages": MESSAGES}}
    )
    assert status >= 400 and b"no-such-model" in raw, raw
    job = run_job(world.a, "unreachable", {"model": "tiny", "messages": MESSAGES})
    assert job["status"] == "failed" and "could not reach the upstream" in job["result"]["error"], job


def test_an_upstream_timeout_is_a_clear_job_error(world: World) -> None:
    job = run_job(world.a, "impatient", {"messages": [{"role": "user", "content": "!sleep=4 slow"}]})
    assert job["status"] == "failed"
    assert "upstream did not answer within 1s (UPSTREAM_TIMEOUT)" in job["result"]["error"], job
    # Streamed: the stream starts, then goes quiet longer than the timeout: the last line says so.
    status, raw = post_json(
        f"{world.a.url}/api/jobs/stream",
        {"containers": ["impatient"], "data": {"messages": [{"role": "user", "content": "!sleep=4 slow"}]}},
    )
    assert status == 200
    last = json.loads(raw.decode().splitlines()[-1])
    assert last == {"error": "upstream went quiet for 1s (UPSTREAM_TIMEOUT)"}


def test_secrets_never_reach_logs_answers_or_errors(world: World) -> None:
    # Run after the others (pytest keeps file order): every proxy has logged its calls and failures.
    assert world.bearer_key and PROXY_KEY_HEX
    texts = {str(path): path.read_text(errors="replace") for path in world.logs}
    texts["node A"] = world.a.log_text() + (world.tmp / "a" / "node.log").read_text(errors="replace")
    with urllib.request.urlopen(
        f"{world.a.url}/api/jobs?" + "&".join(f"id={job}" for job in _job_ids(world)), timeout=10
    ) as response:
        texts["A's jobs"] = response.read().decode()
    for name, text in texts.items():
        assert text, name
        for secret in (world.bearer_key, PROXY_KEY_HEX, PROXY_KEY_HEX.upper()):
            assert secret not in text, f"a secret is in {name}"
    assert "upstream answered HTTP 401" in texts[str(world.tmp / "proxy-wrong-transfer.log")]


def _job_ids(world: World) -> list[str]:
    with urllib.request.urlopen(f"{world.a.url}/api/jobs", timeout=10) as response:
        return [str(job_id) for job_id in json.loads(response.read())]


async def test_an_upstream_that_echoes_the_secret_gets_it_redacted(tmp_path: Path) -> None:
    """A careless upstream repeats the Authorization header in its error: the job error must not."""
    seen: list[str] = []

    async def echo(request: web.Request) -> web.Response:
        seen.append(request.headers["Authorization"])
        return web.json_response(
            {
                "error": {
                    "message": f"key {request.headers['Authorization']} is not valid",
                    "type": "authentication_error",
                }
            },
            status=401,
        )

    secret = "sk-live-" + "e" * 40
    log = tmp_path / "proxy.log"
    async with scripted_upstream(echo) as upstream_url:
        with proxy_process(
            {
                "UPSTREAM_URL": upstream_url,
                "UPSTREAM_AUTH": "bearer",
                "UPSTREAM_API_KEY": secret,
                "UPSTREAM_MODEL": "m",
            },
            log,
        ) as url:
            import aiohttp

            async with aiohttp.ClientSession() as session:
                for destination in (1, 2):
                    async with session.post(
                        f"{url}/service_output",
                        json={"source": 1, "destination": destination, "data": {"messages": MESSAGES}},
                    ) as response:
                        body = await response.json()
                    assert response.status == 502
                    assert body == {"error": "upstream answered HTTP 401: key Bearer [redacted] is not valid"}
    assert seen == [f"Bearer {secret}"] * 2  # the key was sent, and only to the upstream
    assert "[redacted]" in log.read_text() and secret not in log.read_text()


def test_a_bad_key_stops_the_proxy_without_printing_it(tmp_path: Path) -> None:
    key = PROXY_KEY_HEX[:-1] + "x"
    done = subprocess.run(
        [PYTHON, str(PROXY_APP)],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith(("UPSTREAM_", "GONKA_"))},
            "UPSTREAM_URL": "http://127.0.0.1:9/v1",
            "UPSTREAM_AUTH": "gonka",
            "GONKA_PRIVATE_KEY": key,
            "GONKA_TRANSFER_ADDRESS": B_ADDRESS,
            "PORT": str(free_port()),
        },
    )
    assert done.returncode != 0
    assert "GONKA_PRIVATE_KEY is not hex" in done.stderr
    assert key not in done.stdout + done.stderr and PROXY_KEY_HEX[:20] not in done.stdout + done.stderr


@pytest.mark.docker
def test_the_docker_image_forwards_a_job_from_a_node_to_b(world: World, tmp_path: Path) -> None:
    """infernet-local/openai-proxy:latest (scripts/provision.sh builds it), host networking on 127.0.0.1."""
    from tests.e2e.containers.helpers import require_docker_images, service_container

    require_docker_images()
    env = {
        "UPSTREAM_URL": f"{world.b.url}/v1",
        "UPSTREAM_AUTH": "gonka",
        "GONKA_PRIVATE_KEY": PROXY_KEY_HEX,
        "GONKA_TRANSFER_ADDRESS": B_ADDRESS,
        "UPSTREAM_MODEL": "tiny",
    }
    with service_container("infernet-local/openai-proxy:latest", env) as url:
        config = node_config(tmp_path, [{"id": "docker-proxy", "url": url, "models": ["remote"]}])
        node = NodeProcess(config, tmp_path).start()
        try:
            job = run_job(node, "docker-proxy", {"messages": MESSAGES})
            assert job["status"] == "success", job
            assert job["result"]["output"]["choices"][0]["message"]["content"] == ANSWER
            status, raw = post_json(
                f"{node.url}/api/jobs/stream", {"containers": ["docker-proxy"], "data": {"messages": MESSAGES}}
            )
            assert status == 200
            lines = [json.loads(line) for line in raw.partition(b"\n")[2].decode().splitlines() if line]
            assert "".join(c["choices"][0]["delta"].get("content") or "" for c in lines if c["choices"]) == ANSWER
            assert lines[-1]["usage"]["total_tokens"] == 9
            with urllib.request.urlopen(f"{url}/service-resources", timeout=10) as response:
                resources = json.loads(response.read())
            assert resources["upstream"] == {"auth": "gonka", "model": "tiny", "requester_address": PROXY_ADDRESS}
        finally:
            node.stop()
        name = f"infernet-test-openai-proxy-{url.rsplit(':', 1)[1]}"
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True, timeout=30)
        assert "upstream answered 200" in logs.stderr + logs.stdout
        assert PROXY_KEY_HEX not in logs.stderr + logs.stdout


async def test_misbehaving_upstreams_become_clear_errors(tmp_path: Path) -> None:
    """Faults node B cannot produce on demand, from a scripted upstream (a real HTTP server)."""
    import aiohttp

    received: list[tuple[dict[str, str], dict[str, Any]]] = []

    def sse(*events: str) -> bytes:
        return "".join(f"data: {event}\n\n" for event in events).encode()

    chunk = json.dumps(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}],
        }
    )

    async def upstream(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        received.append((dict(request.headers), body))
        say = body["messages"][-1]["content"]
        if say == "429":
            return web.json_response(
                {"error": {"message": "slow down", "type": "rate_limit_error"}},
                status=429,
                headers={"Retry-After": "7"},
            )
        if say == "500":
            return web.Response(text="boom", status=500)
        if say == "text":
            return web.Response(text="hello")
        if say == "json-stream":
            return web.json_response({"choices": []})
        events = {
            "midway": sse(chunk, json.dumps({"error": {"message": "model crashed"}})),
            "garbage": sse(chunk, "not json"),
            "split": b"data: " + chunk.encode() + b"\r\n\r\n: a comment\n\n" + sse("[DONE]"),
        }[say]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(events)
        await response.write_eof()
        return response

    def job(say: str, destination: int = 1) -> dict[str, Any]:
        return {
            "source": 1,
            "destination": destination,
            "data": {"model": "m", "messages": [{"role": "user", "content": say}], "stream": destination == 1},
        }

    async with scripted_upstream(upstream) as upstream_url:
        with proxy_process({"UPSTREAM_URL": upstream_url}, tmp_path / "proxy.log") as url:
            async with aiohttp.ClientSession() as session:

                async def call(say: str, destination: int = 1) -> tuple[int, dict[str, str], bytes]:
                    async with session.post(f"{url}/service_output", json=job(say, destination)) as response:
                        return response.status, dict(response.headers), await response.read()

                status, headers, body = await call("429")
                assert (status, headers["Retry-After"]) == (429, "7")
                assert json.loads(body) == {"error": "upstream answered HTTP 429: slow down"}
                status, _, body = await call("500")
                assert (status, json.loads(body)) == (502, {"error": "upstream answered HTTP 500: boom"})
                status, _, body = await call("text")
                assert (status, json.loads(body)) == (502, {"error": "upstream answered HTTP 200 with non-JSON: hello"})
                status, _, body = await call("json-stream", 2)
                assert status == 502 and b"not text/event-stream" in body
                for say, last in (
                    ("midway", {"error": "upstream error during the stream: model crashed"}),
                    ("garbage", {"error": "the upstream sent an event that is not JSON: not json"}),
                ):
                    status, _, body = await call(say, 2)
                    lines = [json.loads(line) for line in body.decode().splitlines()]
                    assert status == 200 and lines[0]["choices"][0]["delta"]["content"] == "Hi"
                    assert lines[1:] == [last], say
                status, _, body = await call("split", 2)  # CRLF line ends and comments are SSE too
                assert [json.loads(line)["choices"][0]["delta"]["content"] for line in body.decode().splitlines()] == [
                    "Hi"
                ]
    # What the upstream got: the job's own stream fields replaced, usage asked for on streams, no auth.
    plain = next(body for _, body in received if body["messages"][0]["content"] == "500")
    assert "stream" not in plain and "stream_options" not in plain
    streamed = next((h, body) for h, body in received if body["messages"][0]["content"] == "midway")
    assert streamed[1]["stream"] is True and streamed[1]["stream_options"] == {"include_usage": True}
    assert streamed[0]["Accept"] == "text/event-stream" and "Authorization" not in streamed[0]


@pytest.mark.docker
@pytest.mark.slow
def test_a_real_model_on_b_answers_through_the_proxy(tmp_path: Path) -> None:
    """Node B serves the real llm image (SmolLM2) with signatures required; A's /v1 reaches it via the proxy."""
    from tests.e2e.containers.helpers import require_docker_images, service_container

    require_docker_images()
    (tmp_path / "b").mkdir()
    (tmp_path / "a").mkdir()
    with ExitStack() as stack:
        llm = stack.enter_context(service_container("infernet-local/llm:latest", {"N_THREADS": "1"}))
        b = NodeProcess(
            node_config(
                tmp_path / "b",
                [{"id": "llm", "url": llm, "models": ["smollm2"]}],
                auth={"v1": "signatures", "gonka": {"address": B_ADDRESS}},
            ),
            tmp_path / "b",
        ).start()
        stack.callback(b.stop)
        proxy = stack.enter_context(
            proxy_process(
                {
                    "UPSTREAM_URL": f"{b.url}/v1",
                    "UPSTREAM_AUTH": "gonka",
                    "GONKA_PRIVATE_KEY": PROXY_KEY_HEX,
                    "GONKA_TRANSFER_ADDRESS": B_ADDRESS,
                    "UPSTREAM_MODEL": "smollm2",
                },
                tmp_path / "proxy.log",
            )
        )
        a = NodeProcess(
            node_config(tmp_path / "a", [{"id": "remote", "url": proxy, "models": ["remote-smollm2"]}]), tmp_path / "a"
        ).start()
        stack.callback(a.stop)
        client = OpenAI(base_url=f"{a.url}/v1", api_key="unused", max_retries=0, timeout=120)
        question: Any = [{"role": "user", "content": "What is the capital of France?"}]
        whole = client.chat.completions.create(model="remote-smollm2", messages=question, max_tokens=8, temperature=0)
        text = whole.choices[0].message.content
        assert text and whole.usage is not None and 0 < whole.usage.completion_tokens <= 8
        assert whole.model == "smollm2"  # the upstream's own answer, relayed as it is
        chunks = list(
            client.chat.completions.create(
                model="remote-smollm2", messages=question, max_tokens=8, temperature=0, stream=True
            )
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text  # greedy: same text
        usage = subprocess.run(
            [CLI, "usage", "--config", str(b.config_path)], capture_output=True, text=True, timeout=120, check=True
        ).stdout
        assert f"gonka:{PROXY_ADDRESS}" in usage and "smollm2" in usage
