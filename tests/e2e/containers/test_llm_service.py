"""The llm image (infernet-local/llm:latest): a real SmolLM2 model under llama.cpp, in real Docker.

The image is built or refreshed through scripts/provision.sh first (the llama-cpp-python wheel is
built once per machine and cached). The container uses host networking on a free 127.0.0.1 port.
Without a Docker daemon the tests skip locally and fail in CI (tests/support/requirements.py).
Generations are kept short (a few tokens) so the module runs in well under a minute.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.e2e.containers.helpers import require_docker_images
from tests.support.processes import free_port

pytestmark = pytest.mark.docker

IMAGE = "infernet-local/llm:latest"
N_CTX = 2048
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
OTHER = [
    {"role": "system", "content": "You answer in one short sentence."},
    {"role": "user", "content": "Name a colour of the sky."},
]


# ---------------------------------------------------------------------------------------------
# Helpers


def _start_container(env: dict[str, str]) -> tuple[str, str]:
    """docker run -d the llm image with host networking; returns (name, url)."""
    port = free_port()
    name = f"infernet-test-llm-{port}"
    command = ["docker", "run", "-d", "--name", name, "--network", "host", "-e", f"PORT={port}", "-e", "HOST=127.0.0.1"]
    for key, value in env.items():
        command += ["-e", f"{key}={value}"]
    subprocess.run([*command, IMAGE], check=True, capture_output=True, timeout=60)
    return name, f"http://127.0.0.1:{port}"


def _container_logs(name: str) -> str:
    logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True, timeout=30)
    return logs.stdout + logs.stderr


def _running(name: str) -> bool:
    state = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", name], capture_output=True, text=True)
    return state.returncode == 0 and state.stdout.strip() == "true"


def _health(url: str) -> tuple[int, Any] | None:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, None
    except (OSError, ValueError):
        return None  # not listening yet


def job(data: Any, destination: int = 1) -> dict[str, Any]:
    return {"source": 1, "destination": destination, "data": data, "requires_proof": False}


def chat(messages: list[dict[str, str]], **options: Any) -> dict[str, Any]:
    return {"model": "smollm2", "messages": messages, **options}


async def post(url: str, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.post(f"{url}/service_output", json=body) as response:
        return response.status, await response.json(content_type=None)


async def complete(url: str, data: dict[str, Any]) -> dict[str, Any]:
    status, body = await post(url, job(data))
    assert status == 200, body
    return body


async def stream(url: str, data: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """A stream job; returns the Content-Type and the parsed lines (one JSON object each)."""
    body = job(data, destination=2)
    async with aiohttp.ClientSession() as session, session.post(f"{url}/service_output", json=body) as response:
        assert response.status == 200, await response.text()
        raw = await response.read()
        content_type = response.headers["Content-Type"]
    text = raw.decode("utf-8")
    assert text.endswith("\n"), "every line, the last included, ends with a newline"
    return content_type, [json.loads(line) for line in text.splitlines()]


async def get_json(url: str, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}{path}") as response:
        return response.status, await response.json()


def content(completion: dict[str, Any]) -> str:
    return completion["choices"][0]["message"]["content"]


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def llm_image() -> str:
    require_docker_images(timeout_s=2400)  # the llm image's first build takes longer
    return IMAGE


@pytest.fixture(scope="module")
def llm_container(llm_image: str) -> Iterator[tuple[str, str]]:
    """One container for the module (the model loads once): (container name, url)."""
    name, url = _start_container({"N_THREADS": "1"})
    try:
        deadline = time.monotonic() + 60
        while (answer := _health(url)) is None or answer[0] != 200:
            if not _running(name):
                raise RuntimeError(f"llm container exited:\n{_container_logs(name)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"llm /health did not answer 200 within 60 s:\n{_container_logs(name)}")
            time.sleep(0.1)
        yield name, url
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)


# ---------------------------------------------------------------------------------------------
# Completions


@pytest.fixture(scope="module")
def llm(llm_container: tuple[str, str]) -> str:
    return llm_container[1]


async def test_completion_is_an_openai_chat_completion_with_real_usage(llm: str) -> None:
    body = await complete(llm, chat(QUESTION, max_tokens=6, temperature=0))
    assert body["id"].startswith("chatcmpl-") and len(body["id"]) > len("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int) and abs(body["created"] - time.time()) < 120
    assert body["model"] == "smollm2"
    (choice,) = body["choices"]
    assert choice["index"] == 0
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"].strip()
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert 1 <= usage["completion_tokens"] <= 6
    if choice["finish_reason"] == "length":
        assert usage["completion_tokens"] == 6
    # Real counts: the chat template (with its default system prompt) plus the question's tokens.
    assert 10 < usage["prompt_tokens"] < 100
    longer = chat([{"role": "user", "content": "What is the capital of France? " * 10}], max_tokens=1, temperature=0)
    longer_usage = (await complete(llm, longer))["usage"]
    assert longer_usage["prompt_tokens"] >= usage["prompt_tokens"] + 60  # 9 more copies of 7+ tokens
    assert longer_usage["completion_tokens"] == 1


async def test_max_completion_tokens_is_accepted_and_bounds_the_answer(llm: str) -> None:
    body = await complete(llm, chat(OTHER, max_completion_tokens=2, temperature=0))
    assert body["usage"]["completion_tokens"] <= 2
    if body["choices"][0]["finish_reason"] == "length":
        assert body["usage"]["completion_tokens"] == 2


async def test_stop_sequence_cuts_the_text_and_finishes_with_stop(llm: str) -> None:
    full = content(await complete(llm, chat(QUESTION, max_tokens=10, temperature=0)))
    words = full.split()
    assert len(words) >= 3, full
    stop_word = words[2]
    cut = await complete(llm, chat(QUESTION, max_tokens=10, temperature=0, stop=[stop_word]))
    assert content(cut) == full[: full.find(stop_word)]
    assert cut["choices"][0]["finish_reason"] == "stop"


async def test_openai_shape(llm: str) -> None:
    """The answer parses as the official SDK's ChatCompletion when `openai` is installed; the
    same required fields and types are checked by hand either way."""
    body = await complete(llm, chat(OTHER, max_tokens=4, temperature=0, seed=7, top_p=0.9, stop="\n\n"))
    required = {"id": str, "object": str, "created": int, "model": str, "choices": list, "usage": dict}
    for key, kind in required.items():
        assert isinstance(body[key], kind), key
    assert set(body["choices"][0]) >= {"index", "message", "finish_reason"}
    assert set(body["usage"]) >= {"prompt_tokens", "completion_tokens", "total_tokens"}
    try:
        from openai.types.chat import ChatCompletion, ChatCompletionChunk
    except ImportError:
        return
    parsed = ChatCompletion.model_validate(body)
    assert parsed.choices[0].message.content == content(body)
    _, lines = await stream(llm, chat(OTHER, max_tokens=4, temperature=0))
    for line in lines:
        ChatCompletionChunk.model_validate(line)


# ---------------------------------------------------------------------------------------------
# Streaming


async def test_stream_is_ndjson_chunks_with_role_finish_and_usage(llm: str) -> None:
    data = chat(QUESTION, max_tokens=10, temperature=0)
    content_type, lines = await stream(llm, data)
    assert content_type.startswith("application/x-ndjson")
    first, *deltas, last_choice, usage_chunk = lines
    assert all(line["object"] == "chat.completion.chunk" for line in lines)
    assert len({line["id"] for line in lines}) == 1 and lines[0]["id"].startswith("chatcmpl-")
    assert all(line["model"] == "smollm2" and isinstance(line["created"], int) for line in lines)
    assert first["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
    assert len(deltas) >= 2, "the text arrives in several chunks as it is generated"
    for line in deltas:
        (choice,) = line["choices"]
        assert choice["finish_reason"] is None and set(choice["delta"]) == {"content"}
    assert last_choice["choices"][0]["delta"] == {}
    assert last_choice["choices"][0]["finish_reason"] in ("stop", "length")
    assert usage_chunk["choices"] == []
    streamed = "".join(line["choices"][0]["delta"]["content"] for line in deltas)
    whole = await complete(llm, data)
    assert streamed == content(whole), "stream and plain answer agree at temperature 0"
    assert usage_chunk["usage"] == whole["usage"]
    assert last_choice["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]


async def test_stream_rejects_bad_input_with_400_before_streaming(llm: str) -> None:
    body = job({"messages": []}, destination=2)
    async with aiohttp.ClientSession() as session, session.post(f"{llm}/service_output", json=body) as response:
        assert response.status == 400
        assert response.content_type == "application/json"
        assert "messages" in (await response.json())["error"]


async def test_health_answers_during_a_generation_and_a_disconnect_stops_it(llm_container: tuple[str, str]) -> None:
    name, llm = llm_container
    data = chat(
        [{"role": "user", "content": "Write a very long story about a dragon."}],
        max_tokens=1500,
        temperature=1.0,
        seed=3,
    )
    body = job(data, destination=2)
    async with aiohttp.ClientSession() as session, session.post(f"{llm}/service_output", json=body) as response:
        assert response.status == 200
        await response.content.readline()
        await response.content.readline()
        # Generation runs in a worker thread: the server answers meanwhile.
        assert await get_json(llm, "/health") == (200, {"status": "healthy"})
        assert (await get_json(llm, "/service-resources"))[1]["model"]["id"] == "smollm2"
        assert not response.content.at_eof()
    # leaving the block closed the connection mid-stream
    # The worker stops at the next token and lets go of the model: the next request runs.
    body = await complete(llm, chat(QUESTION, max_tokens=1, temperature=0))
    assert body["usage"]["completion_tokens"] == 1
    stopped = [line for line in _container_logs(name).splitlines() if "generation stopped after" in line]
    assert stopped, _container_logs(name)[-2000:]
    generated = int(stopped[-1].split("generation stopped after ")[1].split()[0])
    assert generated < 200, stopped[-1]  # of at most 1500


# ---------------------------------------------------------------------------------------------
# Determinism


async def test_temperature_zero_is_deterministic_across_repeated_and_interleaved_requests(llm: str) -> None:
    a = chat(QUESTION, max_tokens=6, temperature=0)
    b = chat(OTHER, max_tokens=6, temperature=0)
    noisy = chat(
        [*OTHER, {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "Another?"}],
        max_tokens=6,
        temperature=1.2,
        seed=11,
    )
    first_a = content(await complete(llm, a))
    first_b = content(await complete(llm, b))
    # Each prompt after a different one (a stale prompt cache would show), and twice in a row.
    await complete(llm, noisy)
    assert content(await complete(llm, a)) == first_a
    assert content(await complete(llm, a)) == first_a
    assert content(await complete(llm, b)) == first_b
    # Sent at the same time: served one after the other, each as if alone.
    answers = await asyncio.gather(*(complete(llm, x) for x in (b, noisy, a)))
    assert [content(answers[i]) for i in (0, 2)] == [first_b, first_a]
    _, lines = await stream(llm, a)
    assert "".join(line["choices"][0]["delta"].get("content", "") for line in lines if line["choices"]) == first_a


async def test_a_seed_makes_sampling_repeatable(llm: str) -> None:
    data = chat(QUESTION, max_tokens=8, temperature=1.0, seed=1234)
    assert content(await complete(llm, data)) == content(await complete(llm, data))


# ---------------------------------------------------------------------------------------------
# Health and resources


async def test_health_answers_once_loaded(llm: str) -> None:
    assert await get_json(llm, "/health") == (200, {"status": "healthy"})
    # Healthy means loaded: a generation works right away.
    assert (await complete(llm, chat(QUESTION, max_tokens=1, temperature=0)))["usage"]["completion_tokens"] == 1


def test_health_never_answers_without_a_model(llm_image: str) -> None:
    name, url = _start_container({"MODEL_PATH": "/models/missing.gguf"})
    try:
        deadline = time.monotonic() + 30
        while _running(name):
            assert _health(url) is None, "must not listen before the model is loaded"
            assert time.monotonic() < deadline, "the container should exit when the model is missing"
            time.sleep(0.1)
        assert _health(url) is None
        exit_code = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.ExitCode}}", name], capture_output=True, text=True
        ).stdout.strip()
        assert exit_code != "0"
        assert "/models/missing.gguf" in _container_logs(name)
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)


async def test_service_resources_name_the_model(llm: str) -> None:
    status, body = await get_json(llm, "/service-resources")
    assert status == 200
    assert body["version"] == "0.1.0" and body["service_id"] == "llm"
    assert body["hardware_capabilities"][0]["type"] == "CPU"
    assert body["compute_capability"][0]["models"] == ["smollm2"]
    model = body["model"]
    assert model["id"] == "smollm2"
    assert model["context_length"] == N_CTX
    assert model["trained_context_length"] == 8192
    assert model["quantization"] == "Q4_1"
    assert model["file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert (await get_json(llm, "/service-resources?model_id=smollm2"))[1] == {"supported": True}
    assert (await get_json(llm, "/service-resources?model_id=gpt-4"))[1]["supported"] is False


# ---------------------------------------------------------------------------------------------
# Bad input: 400 with a JSON error that names the problem, never a 500


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"model": "smollm2"}, "messages is missing"),
        ({"messages": []}, "messages is empty"),
        ({"messages": "hello"}, "messages must be a list"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]}, "messages[1].role"),
        ({"messages": [{"content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 42}]}, "messages[0].content must be a string"),
        ({"messages": [{"role": "user"}]}, "messages[0].content must be a string"),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]}, "messages[0].content"),
        ({"messages": ["hi"]}, "messages[0] must be an object"),
        ({"messages": QUESTION, "temperature": "hot"}, "temperature must be a number"),
        ({"messages": QUESTION, "temperature": True}, "temperature must be a number"),
        ({"messages": QUESTION, "temperature": 5}, "temperature must be"),
        ({"messages": QUESTION, "top_p": 0}, "top_p must be"),
        ({"messages": QUESTION, "top_p": "x"}, "top_p must be a number"),
        ({"messages": QUESTION, "max_tokens": 0}, "max_tokens must be a positive integer"),
        ({"messages": QUESTION, "max_tokens": "10"}, "max_tokens must be a positive integer"),
        ({"messages": QUESTION, "max_completion_tokens": -1}, "max_completion_tokens must be a positive integer"),
        ({"messages": QUESTION, "seed": 1.5}, "seed must be an integer"),
        ({"messages": QUESTION, "stop": ["a", "b", "c", "d", "e"]}, "stop must be"),
        ({"messages": QUESTION, "stop": 7}, "stop must be"),
        ({"messages": QUESTION, "n": 2}, "n must be 1"),
        ({"messages": QUESTION, "model": 5}, "model must be a string"),
        ("just a string", "data must be an OpenAI chat request"),
    ],
)
async def test_bad_requests_get_400_naming_the_problem(llm: str, data: Any, named: str) -> None:
    status, body = await post(llm, job(data))
    assert status == 400, body
    assert named in body["error"], body


async def test_too_many_tokens_for_the_context_is_400_with_the_numbers(llm: str) -> None:
    status, body = await post(llm, job(chat(QUESTION, max_tokens=N_CTX)))
    assert status == 400
    error = body["error"]
    prompt_tokens = (await complete(llm, chat(QUESTION, max_tokens=1)))["usage"]["prompt_tokens"]
    assert f"the prompt is {prompt_tokens} tokens" in error
    assert f"max_tokens is {N_CTX}" in error and f"context of {N_CTX} tokens" in error
    # A prompt that alone fills the context, with no max_tokens: 400 as well.
    huge = [{"role": "user", "content": "word " * (N_CTX + 50)}]
    status, body = await post(llm, job(chat(huge)))
    assert status == 400 and f"context of {N_CTX} tokens" in body["error"], body


async def test_unknown_fields_are_ignored(llm: str) -> None:
    body = await complete(
        llm,
        chat(
            QUESTION,
            max_tokens=1,
            user="someone",
            stream_options={"include_usage": True},
            logprobs=None,
            frequency_penalty=0,
        ),
    )
    assert body["usage"]["completion_tokens"] == 1


# ---------------------------------------------------------------------------------------------
# On-chain jobs: the prompt is abi.encode(string), the answer the five fields the node delivers


ONCHAIN_MAX_TOKENS = 64  # the image's default
DELIVERY_FIELDS = {"raw_input", "processed_input", "raw_output", "processed_output", "proof"}


def abi_string(text: str) -> bytes:
    """abi.encode(string text), written out: offset word, length word, zero-padded UTF-8."""
    raw = text.encode()
    return (32).to_bytes(32, "big") + len(raw).to_bytes(32, "big") + raw.ljust(-(-len(raw) // 32) * 32, b"\0")


def onchain_job(data: Any, source: int = 0) -> dict[str, Any]:
    return {"source": source, "destination": 0, "data": data, "requires_proof": False}


async def test_an_onchain_prompt_is_answered_as_the_same_chat_request_in_delivery_shape(llm: str) -> None:
    prompt = "What is the capital of France?"
    data = "0x" + abi_string(prompt).hex()
    status, body = await post(llm, onchain_job(data))
    assert status == 200, body
    assert set(body) >= DELIVERY_FIELDS
    assert body["raw_input"] == data[2:]
    assert body["processed_input"] == "" and body["processed_output"] == "" and body["proof"] is None
    answer = bytes.fromhex(body["raw_output"]).decode("utf-8")
    # The same question asked off chain: one user message, greedy, the on-chain token budget.
    direct = await complete(
        llm, chat([{"role": "user", "content": prompt}], max_tokens=ONCHAIN_MAX_TOKENS, temperature=0)
    )
    assert answer == content(direct) and answer.strip()
    assert body["usage"] == direct["usage"] and body["finish_reason"] == direct["choices"][0]["finish_reason"]


async def test_an_offchain_request_for_the_chain_is_answered_in_delivery_shape(llm: str) -> None:
    # A delegated subscription: the input is the REST request's chat request, the output goes on chain.
    data = chat(QUESTION, max_tokens=4, temperature=0)
    status, body = await post(llm, onchain_job(data, source=1))
    assert status == 200, body
    assert body["raw_input"] == "" and body["proof"] is None
    assert bytes.fromhex(body["raw_output"]).decode() == content(await complete(llm, data))


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ("not hex", "on-chain input: on-chain data is not valid hex"),
        ("0x123", "on-chain input: on-chain data is not valid hex"),
        ({"messages": QUESTION}, "on-chain data must be a hex string of abi.encode(string prompt), got dict"),
        ("", "on-chain input: the input is empty"),
        # The length word claims 1000 bytes; 32 follow.
        (
            (32).to_bytes(32, "big") + (1000).to_bytes(32, "big") + b"hi".ljust(32, b"\0"),
            "on-chain input: the string's length is 1000 bytes but only 32 follow its length word",
        ),
        ((7).to_bytes(32, "big") + abi_string("x")[32:], "on-chain input: the string's offset is 7"),
        (b"What is the capital of France? Say it.", "on-chain input: the string's offset is"),  # raw text is not ABI
        (abi_string("x")[:-31], "not padded to a whole 32-byte word"),
        ((32).to_bytes(32, "big") + (2).to_bytes(32, "big") + b"\xc3\x28".ljust(32, b"\0"), "not valid UTF-8"),
        (abi_string("   "), "on-chain input: the prompt is empty"),
    ],
)
async def test_malformed_onchain_input_gets_400_naming_the_problem(llm: str, data: Any, named: str) -> None:
    status, body = await post(llm, onchain_job(data.hex() if isinstance(data, bytes) else data))
    assert status == 400, body
    assert named in body["error"], body


async def test_an_onchain_prompt_too_long_for_the_context_is_400(llm: str) -> None:
    status, body = await post(llm, onchain_job(abi_string("word " * N_CTX).hex()))
    assert status == 400, body
    assert f"max_tokens is {ONCHAIN_MAX_TOKENS}" in body["error"] and f"context of {N_CTX} tokens" in body["error"]
