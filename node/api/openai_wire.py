"""OpenAI's chat-completions wire format, in one place (shared/docs/inference-apis.md §1).

Request and response models (the handlers parse with them, `/openapi.json` is
generated from them), the error shape, and the translation of a model
container's output into OpenAI answers: a whole `chat.completion`, or the
container's NDJSON chunks relayed one SSE event per line.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError

from node import json_codec
from node.api.wire import decode_json
from node.jobs.errors import InvalidRequest
from node.jobs.model import TokenUsage

Number = Annotated[float, Field(strict=True)]  # strict: 0.5 and 1 pass, "0.5" does not

# Fields the node acts on itself; everything else of the request goes to the container as sent.
NODE_FIELDS = ("stream", "stream_options")
DONE = b"data: [DONE]\n\n"


# -- requests ------------------------------------------------------------------


class _Body(BaseModel):
    # OpenAI's clients send fields this node does not know (new ones every release): ignored.
    model_config = ConfigDict(extra="ignore")


class ChatMessage(_Body):
    role: StrictStr = Field(description="system, user or assistant (what the model accepts)")
    content: StrictStr | list[dict[str, Any]] | None = Field(
        default=None, description="Text, or a list of content parts"
    )
    name: StrictStr | None = None


class StreamOptions(_Body):
    include_usage: StrictBool | None = Field(
        default=None, description="Send one more chunk, with empty choices and the usage, before [DONE]"
    )


class ChatCompletionRequest(_Body):
    """POST /v1/chat/completions (and /serving/llm/{model}/chat/completions, where `model` is the path's)."""

    model: StrictStr = Field(min_length=1, description="A model name from GET /v1/models")
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: Annotated[int, Field(strict=True, ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(strict=True, ge=1)] | None = None
    temperature: Annotated[Number, Field(ge=0, le=2)] | None = None
    top_p: Annotated[Number, Field(ge=0, le=1)] | None = None
    seed: Annotated[int, Field(strict=True)] | None = None
    stop: StrictStr | list[StrictStr] | None = None
    n: Annotated[int, Field(strict=True, ge=1, le=1)] | None = Field(default=None, description="Only 1")
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    user: StrictStr | None = None


# -- answers (documented in /openapi.json) ---------------------------------------


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"]
    content: str | None


class Choice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str | None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None


class Delta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    """One SSE event (`data: <json>`); the stream ends with `data: [DONE]`."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice] = Field(description="Empty in the usage chunk (stream_options.include_usage)")
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = Field(description="The container that serves the model")
    available: bool = Field(description="Whether its container can take calls now (an extension of OpenAI's shape)")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class OpenAIErrorBody(BaseModel):
    error: ErrorDetail


# -- errors --------------------------------------------------------------------


class OpenAIError(Exception):
    """An answer in OpenAI's error shape; `headers` go with it (Retry-After, the job id)."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        return json_codec.dumps_bytes(
            {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        )


def stream_error_event(message: str) -> bytes:
    """An error after the stream started (the 200 is sent): the SDKs raise APIError on it."""
    body = {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
    return b"data: " + json_codec.dumps_bytes(body) + b"\n\n"


def _param(loc: tuple[int | str, ...]) -> str:
    """("messages", 0, "content") -> "messages[0].content"."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _invalid(error: ValidationError) -> OpenAIError:
    first = error.errors()[0]
    # Unions report each branch ("content.str", "stop.list[str]"): keep the field's own path.
    loc = tuple(part for part in first["loc"] if not (isinstance(part, str) and ("[" in part or part in _TYPE_NAMES)))
    param = _param(loc) or None
    message = "is required" if first["type"] == "missing" else first["msg"]
    text = f"Invalid request: '{param}': {message}" if param else f"Invalid request: {message}"
    return OpenAIError(400, text, param=param)


_TYPE_NAMES = {"str", "int", "float", "bool", "list", "dict", "none"}


def parse_chat_request(body: Any, model_from_path: str | None = None) -> tuple[ChatCompletionRequest, dict[str, Any]]:
    """The validated request, and the data for the container (the body as sent, minus the node's fields)."""
    if not isinstance(body, dict):
        raise OpenAIError(400, f"The request body must be a JSON object, got {_json_type(body)}")
    if model_from_path is not None:
        body = {**body, "model": model_from_path}  # the per-model route: the path names the model
    try:
        request = ChatCompletionRequest.model_validate(body)
    except ValidationError as error:
        raise _invalid(error) from None
    data = {key: value for key, value in body.items() if key not in NODE_FIELDS}
    return request, data


def _json_type(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def decode_body(raw: bytes) -> Any:
    """Standard JSON only, as on the Infernet API (wire.decode_json), refused in OpenAI's shape."""
    try:
        return decode_json(raw)
    except InvalidRequest as error:
        raise OpenAIError(400, f"{error.message} (send a JSON object, with Content-Type: application/json)") from None


_CONTAINER_FIELD = re.compile(r"^data\.([A-Za-z_][\w.\[\]]*)")


def container_param(message: str) -> str | None:
    """The field a container's 400 names ("data.messages[0].role must ...") as OpenAI's `param`."""
    found = _CONTAINER_FIELD.search(message.split(": ", 1)[-1])
    return found.group(1) if found else None


# -- answers from the container's output -------------------------------------------


def usage_of(value: Any) -> TokenUsage | None:
    if not isinstance(value, dict):
        return None
    prompt, completion = value.get("prompt_tokens"), value.get("completion_tokens")
    if isinstance(prompt, int) and isinstance(completion, int) and not isinstance(prompt, bool):
        return TokenUsage(prompt, completion)
    return None


def completion_from_output(output: Any, model: str, fallback_id: str, created: int) -> dict[str, Any] | None:
    """The container's `chat.completion`, with anything it left out filled in; None if it is not one."""
    if not isinstance(output, dict) or not isinstance(output.get("choices"), list):
        return None
    output.setdefault("id", fallback_id)
    output["object"] = "chat.completion"
    output.setdefault("created", created)
    output.setdefault("model", model)
    return output


class ChunkRelay:
    """Turns the container's NDJSON chunks into SSE events, one per line, as they arrive.

    Each line is parsed once (to learn the text, the finish reason and the usage, which
    the job records) and relayed as the bytes the container sent, unless it lacks
    something a client needs (id, object, created, model, the first delta's role).
    """

    def __init__(self, model: str, include_usage: bool, fallback_id: str, created: int) -> None:
        self._model = model
        self._include_usage = include_usage
        self._id = fallback_id
        self._created = created
        self._buffer = b""
        self._text: list[str] = []
        self._role_seen = False
        self.finish_reason: str | None = None
        self.usage: TokenUsage | None = None
        self.error: str | None = None
        self.chunks = 0  # content chunks relayed

    def feed(self, data: bytes) -> list[bytes]:
        """SSE events for the whole lines in `data` (plus what was buffered)."""
        buffer = self._buffer + data if self._buffer else data
        *lines, self._buffer = buffer.split(b"\n")
        events = []
        for line in lines:
            event = self._event(line)
            if event is not None:
                events.append(event)
        return events

    def end(self) -> list[bytes]:
        """Events for a last line without a newline."""
        tail, self._buffer = self._buffer, b""
        event = self._event(tail)
        return [event] if event is not None else []

    def _event(self, line: bytes) -> bytes | None:
        line = line.strip()
        if not line or self.error is not None:
            return None
        try:
            chunk = json_codec.loads(line)
        except ValueError:
            self.error = "the model container sent a line that is not JSON"
            return None
        if not isinstance(chunk, dict):
            self.error = "the model container sent a line that is not a JSON object"
            return None
        if isinstance(chunk.get("id"), str):
            self._id = chunk["id"]  # the stored completion keeps the container's id
        choices = chunk.get("choices")
        if "error" in chunk and not choices:
            message = chunk["error"]
            message = message.get("message") if isinstance(message, dict) else message
            self.error = f"the model failed: {message}"
            return None
        if "usage" in chunk and chunk["usage"] is not None:
            self.usage = usage_of(chunk["usage"]) or self.usage
        if not choices:  # the usage chunk
            if not self._include_usage:
                return None
            return self._render(chunk, line)
        changed = False
        first = choices[0] if isinstance(choices[0], dict) else {}
        delta = first.get("delta")
        if isinstance(delta, dict):
            if not self._role_seen:
                self._role_seen = True
                if "role" not in delta:
                    delta["role"] = "assistant"
                    changed = True
            content = delta.get("content")
            if isinstance(content, str) and content:
                self._text.append(content)
                self.chunks += 1
        reason = first.get("finish_reason")
        if isinstance(reason, str):
            self.finish_reason = reason
        if "usage" in chunk and not self._include_usage:
            del chunk["usage"]  # asked not to: the usage rides on no chunk
            changed = True
        return self._render(chunk, None if changed else line)

    def _render(self, chunk: dict[str, Any], line: bytes | None) -> bytes:
        for key, value in (
            ("id", self._id),
            ("object", "chat.completion.chunk"),
            ("created", self._created),
            ("model", self._model),
        ):
            if key not in chunk:
                chunk[key] = value
                line = None
        if line is None:
            line = json_codec.dumps_bytes(chunk)
        return b"data: " + line + b"\n\n"

    def completion(self) -> dict[str, Any]:
        """What was streamed, as the one `chat.completion` a non-streamed call would have answered."""
        body: dict[str, Any] = {
            "id": self._id,
            "object": "chat.completion",
            "created": self._created,
            "model": self._model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(self._text)},
                    "finish_reason": self.finish_reason,
                }
            ],
        }
        if self.usage is not None:
            body["usage"] = self.usage.to_wire()
        return body

    @property
    def text(self) -> str:
        return "".join(self._text)
