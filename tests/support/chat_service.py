"""A trivial, fast chat model service speaking the container protocol, as containers/llm does.

`data` is an OpenAI chat request. The answer is deterministic: "You said: " and the
last user message, one token per word, cut at `max_tokens` (finish_reason "length").
Usage counts words (prompt: every message's words plus 3 per message). With
`destination: 2` it streams NDJSON, one `chat.completion.chunk` per line: first the
assistant role, then a word per chunk, then the finish reason, then a chunk with empty
`choices` and the `usage` (the llm container's framing).

Directives at the start of the last user message, for tests:
- `!sleep=<s>` waits s seconds before answering (streams: before the first word);
- `!drip=<s>` waits s seconds before each streamed word;
- `!refuse` answers 400 naming a field, as a model refuses bad input;
- `!broken` streams one word, then a line that is not JSON.

Run as a process (env PORT). With env CALLS_FILE, each call appends a JSON line
`{"event": "call"|"done"|"cancelled", "stream": bool, "content": ...}`: a test sees what
reached the service and whether the node cancelled it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

DIRECTIVE = re.compile(r"^!(sleep|drip)=([0-9.]+)\s*")


def _record(event: str, stream: bool, content: str) -> None:
    path = os.environ.get("CALLS_FILE")
    if path:
        with open(path, "a", encoding="utf-8") as sink:
            sink.write(json.dumps({"event": event, "stream": stream, "content": content}) + "\n")


def _words(text: Any) -> int:
    return len(text.split()) if isinstance(text, str) else 0


class Call:
    def __init__(self, data: dict[str, Any]) -> None:
        messages = data["messages"]
        users = [m.get("content", "") for m in messages if m.get("role") == "user"]
        content = users[-1] if users else ""
        self.raw = content if isinstance(content, str) else ""
        self.sleep = self.drip = 0.0
        text = self.raw
        while (found := DIRECTIVE.match(text)) is not None:
            setattr(self, found.group(1), float(found.group(2)))
            text = text[found.end() :]
        self.refuse = text.startswith("!refuse")
        self.broken = text.startswith("!broken")
        self.model = data.get("model") or "chat-test"
        words = ("You said: " + text).split()
        limit = data.get("max_completion_tokens") or data.get("max_tokens")
        self.finish = "stop"
        if isinstance(limit, int) and len(words) > limit:
            words, self.finish = words[:limit], "length"
        self.words = words
        self.prompt_tokens = sum(_words(m.get("content")) + 3 for m in messages)
        self.id = "chatcmpl-test" + str(time.monotonic_ns())
        self.created = int(time.time())

    def usage(self) -> dict[str, int]:
        completion = len(self.words)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    def chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }
        return (json.dumps(body) + "\n").encode()


async def service_output(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    data = body.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("messages"), list) or not data["messages"]:
        return web.json_response({"error": "data.messages is missing: give a list of messages"}, status=400)
    call = Call(data)
    stream = body.get("destination") == 2
    _record("call", stream, call.raw)
    if call.refuse:
        return web.json_response({"error": "data.messages[0].content was refused on purpose"}, status=400)
    try:
        if stream:
            return await _stream(request, call)
        if call.sleep:
            await asyncio.sleep(call.sleep)
        answer = {
            "id": call.id,
            "object": "chat.completion",
            "created": call.created,
            "model": call.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": " ".join(call.words)},
                    "finish_reason": call.finish,
                }
            ],
            "usage": call.usage(),
        }
        _record("done", stream, call.raw)
        return web.json_response(answer)
    except asyncio.CancelledError:
        _record("cancelled", stream, call.raw)
        raise


async def _pieces(call: Call) -> AsyncIterator[bytes]:
    yield call.chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
    if call.sleep:
        await asyncio.sleep(call.sleep)
    for index, word in enumerate(call.words):
        if call.drip:
            await asyncio.sleep(call.drip)
        piece = word if index == 0 else " " + word
        yield call.chunk([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
        if call.broken:
            yield b"this is not json\n"
            return
    yield call.chunk([{"index": 0, "delta": {}, "finish_reason": call.finish}])
    yield call.chunk([], usage=call.usage())


async def _stream(request: web.Request, call: Call) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    async for piece in _pieces(call):
        await response.write(piece)
    await response.write_eof()
    _record("done", True, call.raw)
    return response


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "healthy"})


def main() -> None:
    app = web.Application()
    app.router.add_post("/service_output", service_output)
    app.router.add_get("/health", health)
    # handler_cancellation: a client (the node) that disconnects cancels the handler, as
    # a model server stops generating; the CALLS_FILE then records "cancelled".
    web.run_app(
        app, host="127.0.0.1", port=int(os.environ["PORT"]), print=None, access_log=None, handler_cancellation=True
    )


if __name__ == "__main__":
    main()
