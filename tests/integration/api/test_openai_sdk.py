"""/v1 through the official OpenAI SDK (openai 3.x), against a real node process and
the trivial chat service (tests/support/chat_service.py) as a real process.

Containers of the node under test:
    chat    the chat service; serves models "tiny" and "org/tiny-2"
    slow    the same service with a 1 s timeout; serves "slow-model"
    gone    a port nothing listens on; serves "gone-model"
    inner   external: false, so its "inner-model" is not served on /v1 (it may only follow another container)
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from openai.types.chat import ChatCompletionMessageParam

from tests.support.processes import NodeProcess, free_port, node_config, running_node, service_process

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there"}]


class Service:
    def __init__(self, url: str, calls: Path) -> None:
        self.url = url
        self.calls_file = calls

    def calls(self) -> list[dict[str, Any]]:
        if not self.calls_file.exists():
            return []
        return [json.loads(line) for line in self.calls_file.read_text().splitlines() if line]

    def wait_for(self, event: str, content: str, deadline_s: float = 10.0) -> dict[str, Any]:
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            for call in self.calls():
                if call["event"] == event and call["content"] == content:
                    return call
            time.sleep(0.05)
        raise AssertionError(f"no {event!r} for {content!r} within {deadline_s}s: {self.calls()}")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    calls = tmp_path_factory.mktemp("chat-service") / "calls.jsonl"
    with service_process("chat", env={"CALLS_FILE": str(calls)}) as url:
        yield Service(url, calls)


@pytest.fixture(scope="module")
def node(service: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    workdir = tmp_path_factory.mktemp("openai-node")
    containers: list[dict[str, Any]] = [
        {"id": "chat", "url": service.url, "models": ["tiny", "org/tiny-2"]},
        {"id": "slow", "url": service.url, "models": ["slow-model"], "timeout": 1},
        {"id": "gone", "url": f"http://127.0.0.1:{free_port()}", "models": ["gone-model"]},
        {"id": "inner", "url": service.url, "models": ["inner-model"], "external": False},
    ]
    config = node_config(workdir, containers, server={"max_body_bytes": 64 * 1024})
    with running_node(config, workdir) as running:
        yield running


@pytest.fixture
def client(node: NodeProcess) -> OpenAI:
    return OpenAI(base_url=f"{node.url}/v1", api_key="unused", max_retries=0)


def job(node: NodeProcess, job_id: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{node.url}/api/jobs?id={job_id}") as response:
        found = json.loads(response.read())
    assert len(found) == 1, found
    return found[0]


def wait_job_status(node: NodeProcess, job_id: str, deadline_s: float = 10.0) -> dict[str, Any]:
    end = time.monotonic() + deadline_s
    while True:
        found = job(node, job_id)
        if found["status"] != "running" or time.monotonic() > end:
            return found
        time.sleep(0.05)


def raw(
    node: NodeProcess, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(f"{node.url}{path}", data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as error:
        assert error.headers["Content-Type"].startswith("application/json"), error.headers
        return error.code, dict(error.headers), json.loads(error.read())


# -- answers -------------------------------------------------------------------


def test_create_answers_whole_and_the_call_is_a_stored_job(client: OpenAI, node: NodeProcess) -> None:
    response = client.chat.completions.with_raw_response.create(model="tiny", messages=USER, max_tokens=50)
    completion = response.parse()
    assert completion.object == "chat.completion"
    assert completion.model == "tiny"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "You said: hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (5, 4)

    stored = job(node, response.headers["X-Infernet-Job-Id"])
    assert stored["status"] == "success"
    assert stored["model"] == "tiny"
    assert stored["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
    assert stored["result"]["container"] == "chat"
    assert stored["result"]["output"]["choices"][0]["message"]["content"] == "You said: hello there"


def test_max_tokens_cuts_the_answer(client: OpenAI) -> None:
    completion = client.chat.completions.create(model="tiny", messages=USER, max_tokens=2)
    assert completion.choices[0].message.content == "You said:"
    assert completion.choices[0].finish_reason == "length"


async def test_async_client(node: NodeProcess) -> None:
    async with AsyncOpenAI(base_url=f"{node.url}/v1", api_key="unused", max_retries=0) as client:
        completion = await client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "async works"}]
        )
    assert completion.choices[0].message.content == "You said: async works"


def test_stream_with_usage(client: OpenAI, node: NodeProcess) -> None:
    response = client.chat.completions.with_raw_response.create(
        model="tiny", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    assert response.headers["Content-Type"].startswith("text/event-stream")
    chunks = list(response.parse())
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == "You said: hello there"
    assert [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices][-1] == "stop"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (5, 4)
    assert all(chunk.usage is None for chunk in chunks[:-1])

    stored = job(node, response.headers["X-Infernet-Job-Id"])
    assert stored["status"] == "success" and stored["model"] == "tiny"
    assert stored["usage"]["completion_tokens"] == 4
    assert stored["result"]["output"]["choices"][0]["message"]["content"] == text


def test_stream_without_usage_has_no_usage_chunk(client: OpenAI) -> None:
    chunks = list(client.chat.completions.create(model="tiny", messages=USER, stream=True))
    assert all(chunk.choices for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == "You said: hello there"


def test_stream_ends_with_done(node: NodeProcess) -> None:
    body = json.dumps({"model": "tiny", "messages": USER, "stream": True}).encode()
    request = urllib.request.Request(
        f"{node.url}/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request) as response:
        text = response.read().decode()
    events = text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert all(event.startswith("data: {") for event in events[:-2])


async def test_async_stream(node: NodeProcess) -> None:
    async with AsyncOpenAI(base_url=f"{node.url}/v1", api_key="unused", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="tiny", messages=USER, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_per_model_route_through_base_url(node: NodeProcess) -> None:
    client = OpenAI(base_url=f"{node.url}/serving/llm/org/tiny-2", api_key="unused", max_retries=0)
    # The path names the model; the SDK's required `model` argument does not matter there.
    completion = client.chat.completions.create(model="whatever", messages=USER)
    assert completion.model == "org/tiny-2"
    assert completion.choices[0].message.content == "You said: hello there"
    chunks = list(client.chat.completions.create(model="whatever", messages=USER, stream=True))
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == "You said: hello there"


def test_unknown_request_fields_are_ignored(client: OpenAI) -> None:
    completion = client.chat.completions.create(
        model="tiny", messages=USER, extra_body={"logit_bias": {}, "some_future_field": {"x": 1}}
    )
    assert completion.choices[0].message.content == "You said: hello there"


def test_models_list(client: OpenAI) -> None:
    models = {model.id: model for model in client.models.list()}
    assert set(models) == {"tiny", "org/tiny-2", "slow-model", "gone-model"}
    assert models["tiny"].object == "model" and models["tiny"].owned_by == "chat"
    assert isinstance(models["tiny"].created, int)
    assert models["gone-model"].owned_by == "gone"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="inner-model", messages=USER)


# -- errors as the SDK's typed exceptions ----------------------------------------


def test_invalid_request_is_bad_request_naming_the_field(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny", messages=[])
    assert caught.value.param == "messages"
    assert caught.value.type == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny", messages=USER, temperature=7)
    assert caught.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": 5}])  # type: ignore[misc,list-item]
    assert caught.value.param == "messages[0].content"


@pytest.mark.parametrize("stream", [False, True])
def test_refused_by_the_model_is_bad_request_with_the_job(client: OpenAI, node: NodeProcess, stream: bool) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "!refuse"}], stream=stream)
    assert caught.value.param == "messages[0].content"  # the container's own message names the field
    assert "refused on purpose" in caught.value.message
    stored = job(node, caught.value.response.headers["X-Infernet-Job-Id"])
    assert stored["status"] == "failed" and "refused on purpose" in stored["result"]["error"]


def test_unknown_model_is_not_found(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="no-such-model", messages=USER)
    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"
    assert "X-Infernet-Job-Id" not in caught.value.response.headers  # refused before any job


def test_unavailable_container_is_503_and_a_failed_job(client: OpenAI, node: NodeProcess) -> None:
    for stream in (False, True):
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model="gone-model", messages=USER, stream=stream)
        assert caught.value.status_code == 503
        assert caught.value.code == "model_unavailable"
        stored = job(node, caught.value.response.headers["X-Infernet-Job-Id"])
        assert stored["status"] == "failed" and stored["model"] == "gone-model"


def test_container_timeout_is_504(client: OpenAI, node: NodeProcess) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="slow-model", messages=[{"role": "user", "content": "!sleep=4 late"}])
    assert caught.value.status_code == 504
    assert caught.value.code == "timeout"
    stored = job(node, caught.value.response.headers["X-Infernet-Job-Id"])
    assert stored["status"] == "failed" and "within 1s" in stored["result"]["error"]


def test_stream_that_breaks_after_it_started_raises_in_the_sdk(client: OpenAI, node: NodeProcess) -> None:
    response = client.chat.completions.with_raw_response.create(
        model="tiny", messages=[{"role": "user", "content": "!broken words"}], stream=True
    )
    with pytest.raises(openai.APIError, match="not JSON"):
        list(response.parse())
    stored = job(node, response.headers["X-Infernet-Job-Id"])
    assert stored["status"] == "failed"


def test_queue_full_is_rate_limited_with_retry_after(service: Service, tmp_path: Path) -> None:
    config = node_config(tmp_path, [{"id": "chat", "url": service.url, "models": ["tiny"]}], jobs={"queue_size": 1})
    with running_node(config, tmp_path) as small:
        client = OpenAI(base_url=f"{small.url}/v1", api_key="unused", max_retries=0)
        holder = threading.Thread(
            target=client.chat.completions.create,
            kwargs={"model": "tiny", "messages": [{"role": "user", "content": "!sleep=3 hold the place"}]},
        )
        holder.start()
        try:
            service.wait_for("call", "!sleep=3 hold the place")
            with pytest.raises(openai.RateLimitError) as caught:
                client.chat.completions.create(model="tiny", messages=USER)
            assert caught.value.response.headers["Retry-After"] == "1"
            assert caught.value.type == "rate_limit_error"
        finally:
            holder.join()
        # The place is free again once the holder finished.
        assert client.chat.completions.create(model="tiny", messages=USER).choices[0].message.content


# -- a client that leaves ----------------------------------------------------------


def test_disconnect_cancels_a_streamed_call(client: OpenAI, node: NodeProcess, service: Service) -> None:
    content = "!drip=0.3 " + " ".join(f"w{i}" for i in range(40))
    response = client.chat.completions.with_raw_response.create(
        model="tiny", messages=[{"role": "user", "content": content}], stream=True
    )
    stream = response.parse()
    next(iter(stream))  # the stream is under way
    stream.close()
    service.wait_for("cancelled", content)
    stored = wait_job_status(node, response.headers["X-Infernet-Job-Id"])
    assert stored["status"] == "failed" and "client went away" in stored["result"]["error"]


def test_disconnect_cancels_a_whole_call(node: NodeProcess, service: Service) -> None:
    content = "!sleep=20 too slow for the client"
    client = OpenAI(base_url=f"{node.url}/v1", api_key="unused", max_retries=0, timeout=1.0)
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": content}])
    service.wait_for("cancelled", content, deadline_s=5)
    assert time.monotonic() - started < 10  # not the 20 s the service would have taken


# -- never HTML or text, always OpenAI's shape ----------------------------------------


def _is_openai_error(body: Any) -> bool:
    fields = {"message", "type", "param", "code"}
    return isinstance(body, dict) and set(body) == {"error"} and set(body["error"]) == fields


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status"),
    [
        ("POST", "/v1/chat/completions", b"{not json", {"Content-Type": "application/json"}, 400),
        ("POST", "/v1/chat/completions", b"model=tiny", {"Content-Type": "application/x-www-form-urlencoded"}, 400),
        ("POST", "/v1/chat/completions", b"", {}, 400),
        ("POST", "/v1/chat/completions", b"[1, 2]", {"Content-Type": "application/json"}, 400),
        ("POST", "/v1/chat/completions", b'{"model": "tiny", "messages": [], "temperature": NaN}', {}, 400),
        ("POST", "/v1/chat/completions", b"not gzip", {"Content-Encoding": "gzip"}, 400),
        ("POST", "/v1/chat/completions", b'{"messages": []}', {"Content-Type": "application/json"}, 400),
        ("POST", "/v1/chat/completions", b"x" * (128 * 1024), {"Content-Type": "application/json"}, 413),
        ("GET", "/v1/chat/completions", None, {}, 405),
        ("POST", "/v1/models", b"{}", {}, 405),
        ("GET", "/v1/embeddings", None, {}, 404),
        ("GET", "/v1", None, {}, 404),
        ("POST", "/serving/llm/nope/chat/completions", json.dumps({"messages": USER}).encode(), {}, 404),
        ("POST", "/serving/llm/tiny/completions", b"{}", {}, 404),
    ],
)
def test_errors_are_openai_shaped(
    node: NodeProcess, method: str, path: str, body: bytes | None, headers: dict[str, str], status: int
) -> None:
    got, _, answer = raw(node, method, path, body, headers)
    assert got == status
    assert _is_openai_error(answer), answer


def test_infernet_api_keeps_its_own_error_shape(node: NodeProcess) -> None:
    status, _, answer = raw(node, "POST", "/api/jobs", b"{not json", {"Content-Type": "application/json"})
    assert status == 400 and isinstance(answer["error"], str)


# -- metrics -----------------------------------------------------------------------


def test_metrics_per_model(client: OpenAI, node: NodeProcess) -> None:
    client.chat.completions.create(model="org/tiny-2", messages=USER)
    list(client.chat.completions.create(model="org/tiny-2", messages=USER, stream=True))
    with urllib.request.urlopen(f"{node.url}/metrics") as response:
        text = response.read().decode()
    lines = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("infernet_model_")
    }
    assert lines['infernet_model_requests_total{kind="complete",model="org/tiny-2",outcome="success"}'] >= 1
    assert lines['infernet_model_requests_total{kind="stream",model="org/tiny-2",outcome="success"}'] >= 1
    assert lines['infernet_model_prompt_tokens_total{model="org/tiny-2"}'] >= 10
    assert lines['infernet_model_completion_tokens_total{model="org/tiny-2"}'] >= 8
    assert lines['infernet_model_time_to_first_token_seconds_count{model="org/tiny-2"}'] >= 1
    assert lines['infernet_model_tokens_per_second_count{model="org/tiny-2"}'] >= 2
