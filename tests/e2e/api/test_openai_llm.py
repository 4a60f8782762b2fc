"""/v1 with the real model: the node manages infernet-local/llm:latest (SmolLM2 under llama.cpp) in
real Docker, and the official OpenAI SDK, infernet-client 1.4.0 and plain HTTP talk to it.

Skipped without a Docker daemon or the llm image locally; a failure in CI (tests/support/requirements.py).
Generations are a few tokens long, so the module runs in well under a minute once the image exists.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import openai
import pytest
from openai import AsyncOpenAI, OpenAI, Stream
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from tests.e2e.containers.helpers import docker_unavailable_reason, provision_images
from tests.e2e.services.support import (
    NODE_START_S,
    http,
    managed_config,
    new_prefix,
    remove_containers,
    run_job,
    wait_for,
)
from tests.support.client import client_venv, is_uuid, run_cli  # noqa: F401  (client_venv: a fixture)
from tests.support.processes import NodeProcess
from tests.support.requirements import unavailable

pytestmark = [pytest.mark.docker, pytest.mark.slow]

IMAGE = "infernet-local/llm:latest"
MODEL = "smollm2"
QUESTION: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY: dict[str, Any] = {"temperature": 0, "max_tokens": 12}


def _require_llm_image() -> None:
    reason = docker_unavailable_reason()
    if reason is not None:
        unavailable(f"no Docker daemon: {reason}")
    provision_images()  # builds or refreshes the images (the llm one included, where provision builds it)
    found = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True, timeout=60)
    if found.returncode != 0:
        unavailable(f"{IMAGE} is not built (scripts/provision.sh builds it)")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    _require_llm_image()
    prefix = new_prefix()
    workdir = tmp_path_factory.mktemp("llm-node")
    config = managed_config(workdir, prefix, [{"id": "llm", "image": IMAGE, "models": [MODEL]}])
    # One call at a time: a held stream makes the next call a 429.
    config["jobs"] = {**config["jobs"], "queue_size": 1}
    running = NodeProcess(config, workdir)
    try:
        running.start(NODE_START_S)
        running.config["prefix"] = prefix
        yield running
    finally:
        running.stop(60)
        remove_containers(prefix)


@pytest.fixture
def client(node: NodeProcess) -> OpenAI:
    return OpenAI(base_url=f"{node.url}/v1", api_key="unused", max_retries=0, timeout=120)


def container_url(node: NodeProcess) -> str:
    """Where the node publishes the llm container (127.0.0.1 and a host port)."""
    mapped = subprocess.run(
        ["docker", "port", f"{node.config['prefix']}llm", "3000/tcp"], capture_output=True, text=True, timeout=30
    )
    assert mapped.returncode == 0, mapped.stderr
    host_port = mapped.stdout.split()[0]
    return f"http://{host_port}"


def stored(node: NodeProcess, job_id: str) -> dict[str, Any]:
    status, body = http("GET", f"{node.url}/api/jobs?id={job_id}")
    assert status == 200 and len(body) == 1, body
    return dict(body[0])


def test_create_and_the_job_it_is(client: OpenAI, node: NodeProcess) -> None:
    response = client.chat.completions.with_raw_response.create(model=MODEL, messages=QUESTION, **GREEDY)
    completion = response.parse()
    text = completion.choices[0].message.content
    assert text  # a 135M model: what it says is its own business; that it says something is ours
    assert completion.model == MODEL
    assert completion.usage is not None and completion.usage.prompt_tokens > 5
    assert 0 < completion.usage.completion_tokens <= 12
    job = stored(node, response.headers["X-Infernet-Job-Id"])
    assert job["status"] == "success" and job["model"] == MODEL
    assert job["usage"]["completion_tokens"] == completion.usage.completion_tokens
    assert job["usage"]["prompt_tokens"] == completion.usage.prompt_tokens


async def test_async_create(node: NodeProcess) -> None:
    async with AsyncOpenAI(base_url=f"{node.url}/v1", api_key="unused", max_retries=0, timeout=120) as client:
        completion = await client.chat.completions.create(model=MODEL, messages=QUESTION, **GREEDY)
    assert completion.choices[0].message.content


def test_stream_with_usage_says_what_the_whole_answer_says(client: OpenAI) -> None:
    whole = client.chat.completions.create(model=MODEL, messages=QUESTION, **GREEDY)
    chunks = list(
        client.chat.completions.create(
            model=MODEL, messages=QUESTION, stream=True, stream_options={"include_usage": True}, **GREEDY
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert whole.usage is not None and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_models_list(client: OpenAI) -> None:
    models = {model.id: model for model in client.models.list()}
    assert set(models) == {MODEL}
    assert models[MODEL].owned_by == "llm"


def test_per_model_route_through_base_url(node: NodeProcess) -> None:
    client = OpenAI(base_url=f"{node.url}/serving/llm/{MODEL}", api_key="unused", max_retries=0, timeout=120)
    completion = client.chat.completions.create(model="ignored", messages=QUESTION, **GREEDY)
    assert completion.choices[0].message.content


def test_typed_errors(client: OpenAI, node: NodeProcess) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        client.chat.completions.create(model="gpt-4o", messages=QUESTION)
    assert not_found.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:  # the model refuses a role it does not know
        client.chat.completions.create(model=MODEL, messages=[{"role": "wizard", "content": "hi"}])  # type: ignore[misc,list-item]
    assert bad.value.param == "messages[0].role"
    with pytest.raises(openai.BadRequestError) as too_long:  # more tokens than the context holds
        client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=100_000)
    assert "context" in too_long.value.message


def test_queue_full_is_a_rate_limit_error(client: OpenAI, node: NodeProcess) -> None:
    held = client.chat.completions.with_raw_response.create(model=MODEL, messages=QUESTION, stream=True, max_tokens=200)
    stream = cast(Stream[ChatCompletionChunk], held.parse())  # stream=True: the SDK's overloads lose that here
    try:
        next(iter(stream))
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model=MODEL, messages=QUESTION, **GREEDY)
        assert caught.value.response.headers["Retry-After"] == "1"
        assert caught.value.type == "rate_limit_error"
    finally:
        stream.close()
    # The client left: the node cancels the call, fails its job and frees the place.
    job = wait_for(
        lambda: (j := stored(node, held.headers["X-Infernet-Job-Id"]))["status"] != "running" and j,
        30,
        "the abandoned stream's job to end",
    )
    assert job["status"] == "failed" and "client went away" in job["result"]["error"]


def test_consistency_v1_api_jobs_and_the_container(client: OpenAI, node: NodeProcess) -> None:
    """Temperature 0: the same text through /v1, through /api/jobs and straight from the container."""
    request = {"model": MODEL, "messages": QUESTION, **GREEDY}
    through_v1 = client.chat.completions.create(**request).choices[0].message.content
    job = run_job(node, ["llm"], request)
    assert job["status"] == "success", job
    through_jobs = job["result"]["output"]["choices"][0]["message"]["content"]
    body = json.dumps({"source": 1, "destination": 1, "data": request, "requires_proof": False}).encode()
    direct_request = urllib.request.Request(
        f"{container_url(node)}/service_output", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(direct_request, timeout=120) as response:
        direct = json.loads(response.read())["choices"][0]["message"]["content"]
    assert through_v1 == through_jobs == direct
    assert through_v1


@pytest.mark.client
def test_infernet_client_job_sync_and_stream(node: NodeProcess, client_venv: Path) -> None:  # noqa: F811
    request = json.dumps({"model": MODEL, "messages": QUESTION, **GREEDY})
    # A 135M model on a loaded machine can take longer than the default 5 one-second polls.
    result = run_cli("job", "--url", node.url, "-c", "llm", "--sync", "--retries", "60", stdin=request, timeout=120)
    assert result.returncode == 0, result.describe()
    answer = json.loads(result.stdout)
    assert answer["object"] == "chat.completion" and answer["choices"][0]["message"]["content"]

    result = run_cli("stream", "--url", node.url, "-c", "llm", stdin=request, timeout=120)
    assert result.returncode == 0, result.describe()
    first, _, rest = result.stdout.partition("\n")
    assert first.startswith("Job ID: ") and is_uuid(first[len("Job ID: ") :]), result.describe()
    lines = [json.loads(line) for line in rest.splitlines() if line]
    text = "".join(line["choices"][0]["delta"].get("content", "") for line in lines if line.get("choices"))
    assert text == answer["choices"][0]["message"]["content"]
    assert lines[-1]["choices"] == [] and lines[-1]["usage"]["completion_tokens"] > 0
