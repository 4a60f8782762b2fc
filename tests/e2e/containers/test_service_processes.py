"""hello-world and streaming as plain local processes on the project venv's aiohttp (no Docker)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.e2e.containers.helpers import get_json, job, local_service, post_json, post_raw, read_stream

# A delay between chunks, so separate chunks arrive as separate reads even on a busy machine.
STREAM_DELAY_MS = "40"


@pytest.fixture(scope="module")
def hello_world() -> Iterator[str]:
    with local_service("hello-world", {"STREAM_DELAY_MS": STREAM_DELAY_MS}) as url:
        yield url


@pytest.fixture(scope="module")
def streaming() -> Iterator[str]:
    with local_service("streaming", {"STREAM_DELAY_MS": STREAM_DELAY_MS}) as url:
        yield url


# --- hello-world -----------------------------------------------------------------------------

ECHO_CASES = [
    {"prompt": "hi", "nested": {"list": [1, 2.5, None, True], "text": "grüße 🌍"}},
    [1, "two", {"three": 3}],
    "a bare string",
    42,
    None,
]


@pytest.mark.parametrize("data", ECHO_CASES, ids=["object", "list", "string", "number", "null"])
async def test_echo_returns_data_verbatim(hello_world: str, data: object) -> None:
    status, body = await post_json(hello_world, job(data, requires_proof=False))
    assert status == 200
    assert body == data


async def test_chain_of_two_echoes_gives_the_input_back(hello_world: str) -> None:
    data = {"a": [1, {"b": "c"}]}
    _, first = await post_json(hello_world, job(data))
    _, second = await post_json(hello_world, job(first))
    assert second == data


async def test_echo_stream_arrives_in_several_reads(hello_world: str) -> None:
    text = "one two three four five six"
    response, reads = await read_stream(hello_world, job({"prompt": text}, destination=2))
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert response.headers.get("Transfer-Encoding") == "chunked"
    assert len(reads) >= 3, f"expected the words in separate reads, got {reads!r}"
    assert b"".join(reads).decode() == text


async def test_echo_stream_never_splits_a_utf8_character(hello_world: str) -> None:
    text = "grüße aus köln 🌍 ünd ßo wëiter"
    _, reads = await read_stream(hello_world, job({"input": text}, destination=2))
    assert len(reads) >= 2
    assert "".join(chunk.decode("utf-8") for chunk in reads) == text  # each read decodes alone


async def test_echo_stream_of_other_data_is_its_json_text(hello_world: str) -> None:
    data = {"a": 1, "b": [True, None]}
    _, reads = await read_stream(hello_world, job(data, destination=2))
    assert json.loads(b"".join(reads)) == data


async def test_health(hello_world: str) -> None:
    assert await get_json(hello_world, "/health") == (200, {"status": "healthy"})


async def test_resources_describe_the_service(hello_world: str) -> None:
    status, body = await get_json(hello_world, "/service-resources")
    assert status == 200
    assert body["version"] == "0.1.0"
    assert body["service_id"] == "hello-world"
    assert body["hardware_capabilities"][0]["type"] == "CPU"
    assert body["hardware_capabilities"][0]["cores"] >= 1
    assert body["compute_capability"][0]["id"] == "hello-world"
    assert body["compute_capability"][0]["type"] == "custom"


async def test_model_support_by_default_is_the_service_name(hello_world: str) -> None:
    assert await get_json(hello_world, "/service-resources?model_id=hello-world") == (200, {"supported": True})
    status, body = await get_json(hello_world, "/service-resources?model_id=gpt-9")
    assert status == 200
    assert body["supported"] is False
    assert "gpt-9" in body["error"]


async def test_models_env_sets_the_supported_model_ids() -> None:
    with local_service("hello-world", {"MODELS": "alpha, beta"}) as url:
        assert (await get_json(url, "/service-resources?model_id=beta"))[1] == {"supported": True}
        assert (await get_json(url, "/service-resources?model_id=hello-world"))[1]["supported"] is False


BAD_BODIES = [
    (b'{"source": 1,', "not valid JSON"),
    (b"\xff\xfe", "not valid"),
    (b"[1, 2]", "JSON object"),
    (b'{"source": 1, "destination": 1}', "'data'"),
    (b'{"source": 1, "destination": 7, "data": 1}', "'destination'"),
    (b'{"source": "1", "destination": 1, "data": 1}', "'source'"),
    (b'{"source": 1, "destination": 1, "data": 1, "requires_proof": "yes"}', "'requires_proof'"),
    (b'{"source": 1, "destination": 1, "data": NaN}', "NaN"),
    (b'{"source": 1, "destination": 1, "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
]


@pytest.mark.parametrize(
    ("raw", "named"),
    BAD_BODIES,
    ids=[
        "truncated",
        "not-utf8",
        "array",
        "no-data",
        "bad-destination",
        "string-source",
        "bad-requires-proof",
        "nan",
        "deep-nesting",
    ],
)
async def test_malformed_requests_get_a_json_400_naming_the_problem(hello_world: str, raw: bytes, named: str) -> None:
    status, content_type, body = await post_raw(hello_world, raw)
    assert status == 400
    assert content_type == "application/json"
    assert named in body["error"]
    assert "Traceback" not in body["error"]


async def test_unknown_path_and_wrong_method_are_json_errors(hello_world: str) -> None:
    status, body = await get_json(hello_world, "/nope")
    assert status == 404 and "/nope" in body["error"]
    status, body = await get_json(hello_world, "/service_output")
    assert status == 405 and "POST" in body["error"]


# --- streaming -------------------------------------------------------------------------------


async def test_generator_streams_max_tokens_pieces_matching_the_json_output(streaming: str) -> None:
    data = {"prompt": "Tell me about the iris flower", "max_tokens": 6}
    response, reads = await read_stream(streaming, job(data, destination=2))
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert len(reads) >= 3, f"expected pieces in separate reads, got {reads!r}"
    streamed = b"".join(reads).decode()
    assert len(streamed.split()) == 6
    status, body = await post_json(streaming, job(data))
    assert status == 200
    assert body == {"output": streamed}


async def test_generator_is_deterministic_with_16_tokens_by_default(streaming: str) -> None:
    _, first = await post_json(streaming, job({"input": "same prompt"}))
    _, second = await post_json(streaming, job({"input": "same prompt"}))
    _, other = await post_json(streaming, job({"input": "another prompt entirely"}))
    assert first == second
    assert len(first["output"].split()) == 16
    assert first != other


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"max_tokens": 3}, "data.prompt"),
        ({"prompt": 5}, "data.prompt"),
        ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "x", "max_tokens": "3"}, "max_tokens"),
        ({"prompt": "x", "max_tokens": 100000}, "max_tokens"),
        ([1, 2], "data must be an object"),
    ],
    ids=["no-prompt", "number-prompt", "zero-tokens", "string-tokens", "too-many-tokens", "list"],
)
@pytest.mark.parametrize("destination", [1, 2], ids=["json", "stream"])
async def test_generator_rejects_bad_data_with_400(streaming: str, data: object, named: str, destination: int) -> None:
    status, body = await post_json(streaming, job(data, destination=destination))
    assert status == 400
    assert named in body["error"]


async def test_generator_resources(streaming: str) -> None:
    status, body = await get_json(streaming, "/service-resources")
    assert status == 200 and body["service_id"] == "streaming"
    assert (await get_json(streaming, "/service-resources?model_id=streaming"))[1] == {"supported": True}
