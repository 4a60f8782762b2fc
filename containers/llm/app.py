"""llm: a real chat model (SmolLM2-135M-Instruct, 4-bit GGUF) behind the Infernet container protocol.

`data` is an OpenAI chat request; the answer is an OpenAI `chat.completion` object, or with
destination 2 (STREAM) newline-delimited JSON: one `chat.completion.chunk` object per line, the
last one carrying `usage` (see README.md for the exact framing).

On-chain jobs (onchain.py): with source 0, `data` is the hex of a consumer contract's
`abi.encode(string prompt)`, asked as one user message at temperature 0; with destination 0 the
answer is the five-field shape the node delivers as `abi.encode(bytes answer, bytes "")`.

llama-cpp-python runs the model. It is loaded once, before the server listens, so /health answers
only when the model is ready. Generation is blocking, so it runs in a worker thread, one request
at a time (a llama context is not thread-safe); the model's state is reset before each request so
the same prompt at temperature 0 always gives the same text, whatever was asked before.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
import math
import os
import random
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import infernet_service as svc
except ImportError:  # run from the source tree: the shared module lives in containers/common/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "common"))
    import infernet_service as svc

import onchain  # beside this file, in the image as in the source tree

log = logging.getLogger("llm")

SERVICE_NAME = "llm"
MODEL_ID = "smollm2"
DEFAULT_MODEL_PATH = "/models/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_N_CTX = 2048
DEFAULT_MAX_TOKENS = 256  # when the request names none (OpenAI: "until the context is full")
# On chain the answer is stored by a contract, paying gas per byte: keep it short by default.
DEFAULT_ONCHAIN_MAX_TOKENS = 64
ROLES = ("system", "user", "assistant")
MAX_STOP_SEQUENCES = 4

# general.file_type in GGUF metadata (llama.cpp's enum llama_ftype), for /service-resources.
FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    32: "BF16",
}


# ---------------------------------------------------------------------------------------------
# Request validation (pure; no model needed)


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: list[dict[str, str]]
    max_tokens: int | None
    temperature: float
    top_p: float
    seed: int | None
    stop: tuple[str, ...]


def _number(data: dict[str, Any], key: str, default: float, low: float, high: float, low_open: bool = False) -> float:
    value = data.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise svc.BadInput(f"data.{key} must be a number, got {value!r}")
    if value > high or value < low or (low_open and value == low):
        bound = f"more than {low}" if low_open else f"at least {low}"
        raise svc.BadInput(f"data.{key} must be {bound} and at most {high}, got {value!r}")
    return float(value)


def parse_chat_request(data: Any) -> ChatRequest:
    if not isinstance(data, dict):
        raise svc.BadInput(
            'data must be an OpenAI chat request like {"messages": [{"role": "user", "content": "Hi"}]}, '
            f"got {type(data).__name__}"
        )
    model = data.get("model", MODEL_ID)
    if model is None:
        model = MODEL_ID
    if not isinstance(model, str):
        raise svc.BadInput(f"data.model must be a string, got {model!r}")

    messages = data.get("messages")
    if messages is None:
        raise svc.BadInput("data.messages is missing: give a list of {role, content} messages")
    if not isinstance(messages, list):
        raise svc.BadInput(f"data.messages must be a list, got {type(messages).__name__}")
    if not messages:
        raise svc.BadInput("data.messages is empty: give at least one message")
    clean: list[dict[str, str]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise svc.BadInput(
                f"data.messages[{i}] must be an object with role and content, got {type(message).__name__}"
            )
        role = message.get("role")
        if role not in ROLES:
            raise svc.BadInput(f"data.messages[{i}].role must be one of {', '.join(ROLES)}, got {role!r}")
        content = message.get("content")
        if not isinstance(content, str):
            raise svc.BadInput(
                f"data.messages[{i}].content must be a string, got "
                + ("nothing" if content is None else type(content).__name__)
            )
        clean.append({"role": role, "content": content})

    max_tokens = data.get("max_completion_tokens")
    key = "max_completion_tokens"
    if max_tokens is None:
        max_tokens, key = data.get("max_tokens"), "max_tokens"
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise svc.BadInput(f"data.{key} must be a positive integer, got {max_tokens!r}")

    temperature = _number(data, "temperature", 1.0, 0.0, 2.0)
    top_p = _number(data, "top_p", 1.0, 0.0, 1.0, low_open=True)

    seed = data.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise svc.BadInput(f"data.seed must be an integer, got {seed!r}")

    stop = data.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,) if stop else ()
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= MAX_STOP_SEQUENCES:
        stops = tuple(s for s in stop if s)
    else:
        raise svc.BadInput(
            f"data.stop must be a string or a list of at most {MAX_STOP_SEQUENCES} strings, got {stop!r}"
        )

    n = data.get("n")
    if n is not None and n != 1:
        raise svc.BadInput(f"data.n must be 1 (one choice per request), got {n!r}")

    return ChatRequest(model, clean, max_tokens, temperature, top_p, seed, stops)


# ---------------------------------------------------------------------------------------------
# The model


@dataclass
class Prepared:
    request: ChatRequest
    prompt_tokens: list[int]
    max_tokens: int


class Engine:
    """One llama model and context; callers hold `lock` around generate()."""

    def __init__(self, model_path: str, n_ctx: int, n_threads: int) -> None:
        from llama_cpp import Llama
        from llama_cpp import llama_cpp as llama_low
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        if not os.path.isfile(model_path):
            raise SystemExit(f"MODEL_PATH {model_path} does not exist")
        started = time.monotonic()
        self.llm = Llama(
            model_path=model_path,
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            verbose=False,
        )
        self.load_seconds = time.monotonic() - started
        self.model_path = model_path
        self.n_threads = n_threads
        self.n_ctx = self.llm.n_ctx()
        metadata = self.llm.metadata
        arch = metadata.get("general.architecture", "llama")
        self.trained_context_length = int(metadata.get(f"{arch}.context_length", 0)) or None
        file_type = metadata.get("general.file_type")
        self.quantization = (
            FILE_TYPES.get(int(file_type), f"file_type {file_type}") if file_type is not None else "unknown"
        )
        self.model_name = metadata.get("general.name", Path(model_path).stem)
        template = metadata.get("tokenizer.chat_template")
        if not template:
            raise SystemExit(f"{model_path} has no chat template (tokenizer.chat_template)")
        eos = self.llm.token_eos()
        bos = self.llm.token_bos()
        self.formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=self.llm._model.token_get_text(eos) if eos != -1 else "",
            bos_token=self.llm._model.token_get_text(bos) if bos != -1 else "",
        )
        vocab = getattr(self.llm._model, "vocab", None)
        if vocab is not None and hasattr(llama_low, "llama_vocab_is_eog"):
            self.is_end: Callable[[int], bool] = lambda token: bool(llama_low.llama_vocab_is_eog(vocab, token))
        else:  # older bindings
            self.is_end = lambda token: token == eos
        self.lock = asyncio.Lock()  # created before the event loop runs; fine on 3.10+
        log.info("loaded %s (%s, n_ctx %d) in %.2fs", model_path, self.quantization, self.n_ctx, self.load_seconds)

    def prepare(self, request: ChatRequest) -> Prepared:
        """Render and tokenize the prompt; 400 when it and max_tokens don't fit the context."""
        try:
            prompt = self.formatter(messages=request.messages).prompt
        except Exception as exc:
            raise svc.BadInput(f"the model's chat template refuses these messages: {exc}") from exc
        tokens = self.llm.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)
        room = self.n_ctx - len(tokens)
        if request.max_tokens is None:
            if room < 1:
                raise svc.BadInput(
                    f"the prompt is {len(tokens)} tokens, which leaves no room in the context of {self.n_ctx} tokens"
                )
            max_tokens = min(DEFAULT_MAX_TOKENS, room)
        else:
            max_tokens = request.max_tokens
            if len(tokens) + max_tokens > self.n_ctx:
                raise svc.BadInput(
                    f"the prompt is {len(tokens)} tokens and max_tokens is {max_tokens}: "
                    f"{len(tokens) + max_tokens} tokens exceed the context of {self.n_ctx} tokens"
                )
        return Prepared(request, tokens, max_tokens)

    def generate(self, job: Prepared, emit: Callable[[str], None], cancel: threading.Event) -> tuple[str, int]:
        """Run one generation (blocking). emit() gets text pieces as they are final.

        Returns (finish_reason, completion_tokens).
        """
        request = job.request
        llm = self.llm
        llm.reset()  # no prompt-cache reuse: the same prompt must give the same text
        llm.set_seed((request.seed if request.seed is not None else random.randrange(2**31)) & 0xFFFFFFFF)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = request.stop
        hold = max((len(s) for s in stops), default=1) - 1  # text that may still become a stop string
        pending = ""
        finish = "length"
        count = 0
        generated: list[int] = []

        def cut_at_stop() -> bool:
            nonlocal pending
            cut = min((i for i in (pending.find(s) for s in stops) if i >= 0), default=-1)
            if cut < 0:
                return False
            pending = pending[:cut]
            return True

        for token in llm.generate(
            job.prompt_tokens,
            temp=request.temperature,
            top_p=request.top_p,
            top_k=0,  # OpenAI semantics: only temperature and top_p shape the distribution
            min_p=0.0,
            repeat_penalty=1.0,
            reset=True,
        ):
            if cancel.is_set():
                return "cancelled", count
            if self.is_end(token):
                finish = "stop"
                break
            count += 1
            pending += decoder.decode(llm.detokenize([token], prev_tokens=generated or None))
            generated.append(token)
            if stops and cut_at_stop():
                if pending:
                    emit(pending)
                return "stop", count
            keep = hold if stops else 0
            if len(pending) > keep:
                emit(pending[: len(pending) - keep])
                pending = pending[len(pending) - keep :]
            if count >= job.max_tokens:
                break
        pending += decoder.decode(b"", final=True)
        if stops and cut_at_stop():
            finish = "stop"
        if pending:
            emit(pending)
        return finish, count

    def resources(self) -> dict[str, Any]:
        return {
            "model": {
                "id": MODEL_ID,
                "name": self.model_name,
                "file": Path(self.model_path).name,
                "context_length": self.n_ctx,
                "trained_context_length": self.trained_context_length,
                "quantization": self.quantization,
                "runtime": "llama-cpp-python " + _llama_version(),
                "threads": self.n_threads,
            }
        }


def _llama_version() -> str:
    try:
        import llama_cpp

        return str(llama_cpp.__version__)
    except Exception:
        return "unknown"


# ---------------------------------------------------------------------------------------------
# OpenAI-shaped answers


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def onchain_chat_request(data: Any, max_tokens: int) -> ChatRequest:
    """A source-0 job's request: the contract's prompt as the only user message, greedy (so every
    node of a redundant subscription delivers the same text), at most `max_tokens`."""
    try:
        prompt = onchain.prompt_from_hex(data)
    except onchain.AbiError as exc:
        raise svc.BadInput(f"on-chain input: {exc}") from None
    return ChatRequest(MODEL_ID, [{"role": "user", "content": prompt}], max_tokens, 0.0, 1.0, None, ())


class LlmService:
    def __init__(self, engine: Engine, onchain_max_tokens: int = DEFAULT_ONCHAIN_MAX_TOKENS) -> None:
        self.engine = engine
        self.onchain_max_tokens = onchain_max_tokens

    def _prepare(self, job: svc.Job) -> Prepared:
        if job.source == svc.ONCHAIN:
            return self.engine.prepare(onchain_chat_request(job.data, self.onchain_max_tokens))
        return self.engine.prepare(parse_chat_request(job.data))

    async def complete(self, job: svc.Job) -> dict[str, Any]:
        prepared = self._prepare(job)
        pieces: list[str] = []
        cancel = threading.Event()
        loop = asyncio.get_running_loop()
        async with self.engine.lock:
            created = int(time.time())
            future = loop.run_in_executor(None, self.engine.generate, prepared, pieces.append, cancel)
            try:
                finish, count = await asyncio.shield(future)
            except asyncio.CancelledError:  # the client went away: stop the thread, then let go
                cancel.set()
                await asyncio.wait([future])
                raise
        if job.destination == svc.ONCHAIN:
            # For the node's deliverCompute; the input goes back as raw_input only when it came
            # from the chain (a delegated subscription's input is an off-chain JSON request).
            raw_input = onchain.strip_0x(job.data) if job.source == svc.ONCHAIN else ""
            return {
                **onchain.delivery(raw_input, "".join(pieces)),
                "model": prepared.request.model,
                "finish_reason": finish,
                "usage": _usage(len(prepared.prompt_tokens), count),
            }
        return {
            "id": "chatcmpl-" + uuid.uuid4().hex,
            "object": "chat.completion",
            "created": created,
            "model": prepared.request.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(pieces)},
                    "finish_reason": finish,
                }
            ],
            "usage": _usage(len(prepared.prompt_tokens), count),
        }

    def stream(self, job: svc.Job) -> AsyncIterator[str]:
        prepared = self._prepare(job)  # eager: bad input is a 400 before the stream starts
        return self._stream(prepared)

    async def _stream(self, prepared: Prepared) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        cancel = threading.Event()
        base = {
            "id": "chatcmpl-" + uuid.uuid4().hex,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": prepared.request.model,
        }

        def line(choices: list[dict[str, Any]], **extra: Any) -> str:
            return json.dumps({**base, "choices": choices, **extra}, ensure_ascii=False) + "\n"

        def emit(text: str) -> None:  # worker thread -> event loop
            loop.call_soon_threadsafe(queue.put_nowait, text)

        def work() -> tuple[str, int]:
            try:
                return self.engine.generate(prepared, emit, cancel)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        async with self.engine.lock:
            base["created"] = int(time.time())
            yield line([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
            future = loop.run_in_executor(None, work)
            try:
                while True:
                    text = await queue.get()
                    if text is None:
                        break
                    yield line([{"index": 0, "delta": {"content": text}, "finish_reason": None}])
                try:
                    finish, count = await future
                except Exception as exc:
                    log.exception("generation failed")
                    yield json.dumps({"error": f"generation failed: {type(exc).__name__}: {exc}"}) + "\n"
                    return
                yield line([{"index": 0, "delta": {}, "finish_reason": finish}])
                yield line([], usage=_usage(len(prepared.prompt_tokens), count))
            finally:
                if not future.done():  # closed early (client gone): stop generating, then release
                    cancel.set()
                    await asyncio.wait([future])
                    if not future.cancelled() and future.exception() is None:
                        finish, count = future.result()
                        log.info(
                            "stream closed by the client; generation stopped after %d of at most %d tokens",
                            count,
                            prepared.max_tokens,
                        )


def build_service(engine: Engine, onchain_max_tokens: int = DEFAULT_ONCHAIN_MAX_TOKENS) -> svc.Service:
    llm = LlmService(engine, onchain_max_tokens)
    return svc.Service(
        name=SERVICE_NAME,
        compute=llm.complete,
        stream=llm.stream,
        default_models=(MODEL_ID,),
        description="SmolLM2-135M-Instruct chat model (GGUF, llama.cpp); OpenAI chat requests",
        stream_content_type="application/x-ndjson",
        resources=engine.resources,
    )


def main() -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    # Prompt and generation use the same thread count. Default: half the CPUs (llama.cpp's own
    # default for generation): more threads than free cores makes llama.cpp's threads wait on
    # each other and is far slower, not faster.
    n_threads = svc.env_int("N_THREADS", max(1, (os.cpu_count() or 1) // 2), minimum=1)
    onchain_max_tokens = svc.env_int("ONCHAIN_MAX_TOKENS", DEFAULT_ONCHAIN_MAX_TOKENS, minimum=1)
    engine = Engine(
        os.environ.get("MODEL_PATH") or DEFAULT_MODEL_PATH,
        svc.env_int("N_CTX", DEFAULT_N_CTX, minimum=16),
        n_threads,
    )
    svc.run(build_service(engine, onchain_max_tokens))  # listens only now: /health answers once the model is loaded


if __name__ == "__main__":
    main()
