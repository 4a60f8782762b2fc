"""OpenAI's wire: request parsing, container field names, and the NDJSON -> SSE relay."""

from __future__ import annotations

import json

import pytest

from node.api.openai_wire import ChunkRelay, OpenAIError, container_param, parse_chat_request
from node.jobs.model import TokenUsage


def line(**chunk: object) -> bytes:
    return json.dumps(chunk).encode() + b"\n"


def chunk(content: str | None = None, role: str | None = None, finish: str | None = None) -> bytes:
    delta = {k: v for k, v in (("role", role), ("content", content)) if v is not None}
    return line(
        id="c1",
        object="chat.completion.chunk",
        created=1,
        model="m",
        choices=[{"index": 0, "delta": delta, "finish_reason": finish}],
    )


USAGE = line(
    id="c1",
    object="chat.completion.chunk",
    created=1,
    model="m",
    choices=[],
    usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
)


def events(relay: ChunkRelay, *pieces: bytes) -> list[dict[str, object]]:
    out = [event for piece in pieces for event in relay.feed(piece)] + relay.end()
    assert all(event.startswith(b"data: ") and event.endswith(b"\n\n") for event in out)
    return [json.loads(event[6:]) for event in out]


def test_each_line_is_one_event_as_the_container_sent_it() -> None:
    relay = ChunkRelay("m", include_usage=True, fallback_id="x", created=9)
    body = chunk("", role="assistant") + chunk("Hel") + chunk("lo") + chunk(finish="stop") + USAGE
    first = relay.feed(chunk("", role="assistant"))
    assert first == [b"data: " + chunk("", role="assistant").strip() + b"\n\n"]  # the bytes, unparsed
    rest = events(relay, body[len(chunk("", role="assistant")) :])
    assert rest[-1]["choices"] == [] and rest[-1]["usage"]["completion_tokens"] == 2  # type: ignore[index]
    assert relay.text == "Hello" and relay.finish_reason == "stop" and relay.usage == TokenUsage(3, 2)
    stored = relay.completion()
    assert stored["id"] == "c1" and stored["choices"][0]["message"]["content"] == "Hello"


def test_lines_split_anywhere_are_joined() -> None:
    relay = ChunkRelay("m", include_usage=False, fallback_id="x", created=9)
    body = chunk("", role="assistant") + chunk("añ") + chunk(finish="stop") + USAGE
    got = events(relay, *(body[i : i + 7] for i in range(0, len(body), 7)))
    assert [e["choices"] for e in got][-1][0]["finish_reason"] == "stop"  # type: ignore[index]
    assert all(e["choices"] for e in got)  # no usage chunk without include_usage
    assert relay.text == "añ" and relay.usage == TokenUsage(3, 2)  # still recorded for the job


def test_missing_ids_and_role_are_filled_in() -> None:
    relay = ChunkRelay("m", include_usage=False, fallback_id="chatcmpl-job", created=9)
    bare = [line(choices=[{"index": 0, "delta": {"content": text}}]) for text in "ab"]
    got = events(relay, b"".join(bare))
    assert got[0] == {
        "choices": [{"index": 0, "delta": {"content": "a", "role": "assistant"}}],
        "id": "chatcmpl-job",
        "object": "chat.completion.chunk",
        "created": 9,
        "model": "m",
    }
    assert "role" not in got[1]["choices"][0]["delta"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("bad", "says"),
    [(b"nope\n", "not JSON"), (b"[1]\n", "not a JSON object"), (b'{"error": "out of memory"}\n', "out of memory")],
)
def test_a_bad_or_error_line_stops_the_relay(bad: bytes, says: str) -> None:
    relay = ChunkRelay("m", include_usage=False, fallback_id="x", created=9)
    got = events(relay, chunk("a", role="assistant") + bad + chunk("b"))
    assert len(got) == 1 and relay.error is not None and says in relay.error


def test_request_fields_the_node_acts_on_stay_with_the_node() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "top_k": 3,
    }
    request, data = parse_chat_request(body)
    assert request.stream is True and request.stream_options and request.stream_options.include_usage
    assert data == {"model": "m", "messages": [{"role": "user", "content": "hi"}], "top_k": 3}
    _, data = parse_chat_request({"messages": [{"role": "user", "content": "hi"}]}, model_from_path="p")
    assert data["model"] == "p"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": [{"content": "x"}]}, "messages[0].role"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, "temperature"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 2}, "n"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": [1]}, "stop"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream_options": {"include_usage": 1}},
            "stream_options.include_usage",
        ),
    ],
)
def test_invalid_requests_name_the_field(body: dict[str, object], param: str) -> None:
    with pytest.raises(OpenAIError) as caught:
        parse_chat_request(body)
    assert caught.value.status == 400 and caught.value.param == param


def test_container_messages_name_the_field() -> None:
    assert container_param("container answered HTTP 400: data.messages[1].role must be one of") == "messages[1].role"
    assert container_param("container answered HTTP 400: the prompt is too long") is None
