"""The OpenAI-compatible endpoints: /v1/chat/completions, /serving/llm/{model}/chat/completions, /v1/models.

Thin: parse with the wire models, ask the job service for a model call (a job,
stored before the container is asked), relay the container's answer, render.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from aiohttp import web

from node import json_codec
from node.api.appkeys import DIRECTORY, JOB_DESK
from node.api.auth import admission_gate, admission_in_handler, admitted, caller_of, record_usage, start_settling
from node.api.body import read_body
from node.api.client_ip import client_ip
from node.api.metrics import METRICS
from node.api.openai_errors import JOB_HEADER, from_failure, from_job_error
from node.api.openai_wire import (
    DONE,
    ChatCompletionRequest,
    ChunkRelay,
    ModelCard,
    ModelList,
    OpenAIError,
    completion_from_output,
    decode_body,
    parse_chat_request,
    stream_error_event,
    usage_of,
)
from node.jobs.errors import ContainerFailed, JobError, NotAdmitted
from node.jobs.model import ContainerResult, TokenUsage
from node.jobs.model_calls import CLIENT_LEFT, ModelCall

T = TypeVar("T")

# How often a waiting call checks that its client is still there (aiohttp does not
# cancel handlers when the client leaves; the node's server runs without that).
DISCONNECT_POLL_SECONDS = 0.1
# nginx's "client closed request": nobody reads it, /metrics counts it.
CLIENT_CLOSED = 499
SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}


@dataclass(frozen=True)
class ModelCatalog:
    """The models this node serves: model name -> container id, and when they were listed."""

    containers: dict[str, str]
    created: int


MODELS = web.AppKey("models", ModelCatalog)


class ClientGone(Exception):
    """The client closed the connection while its call ran."""


async def until_disconnect(request: web.Request, work: Coroutine[Any, Any, T], answered: Callable[[], bool]) -> T:
    """Run `work` in this task, cancelling it if the client disconnects meanwhile (then raise ClientGone).

    No task of its own: the poll cancels the handler's task and takes its own cancellation back.
    Once `answered()`, the client may leave: the poll stops (the work only stores its outcome)."""
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    gone = False
    handle: asyncio.TimerHandle | None = None

    def check() -> None:
        nonlocal handle, gone
        if answered():
            handle = None
            return
        transport = request.transport
        if transport is None or transport.is_closing():
            gone = True
            task.cancel()
        else:
            handle = loop.call_later(DISCONNECT_POLL_SECONDS, check)

    handle = loop.call_later(DISCONNECT_POLL_SECONDS, check)
    try:
        return await work
    except asyncio.CancelledError:
        if gone and task.uncancel() == 0:  # ours alone: nobody else (the shutdown) cancelled the request
            raise ClientGone from None
        raise
    finally:
        if handle is not None:
            handle.cancel()


@admission_in_handler
async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await _chat(request, None)


@admission_in_handler
async def serving_chat_completions(request: web.Request) -> web.StreamResponse:
    """The per-model route: clients set base_url to http://host/serving/llm/<model>."""
    return await _chat(request, request.match_info["model"])


async def list_models(request: web.Request) -> web.Response:
    catalog = request.app[MODELS]
    directory = request.app[DIRECTORY]
    listing = ModelList(
        data=[
            ModelCard(
                id=model,
                created=catalog.created,
                owned_by=container,
                available=directory.endpoint(container) is not None,
            )
            for model, container in catalog.containers.items()
        ]
    )
    return web.Response(body=listing.model_dump_json().encode(), content_type="application/json")


async def _chat(request: web.Request, path_model: str | None) -> web.StreamResponse:
    started = time.perf_counter()
    chat, data = parse_chat_request(decode_body(await read_body(request)), path_model)
    container = request.app[MODELS].containers.get(chat.model)
    if container is None:
        raise OpenAIError(
            404,
            f"The model '{chat.model}' does not exist. GET /v1/models lists the models this node serves.",
            param="model",
            code="model_not_found",
        )
    # The job's write is gated on the caller's admission (node/api/auth.py), started by the auth
    # middleware: on SQLite both take one store round, and a refused call writes no job.
    try:
        call = await request.app[JOB_DESK].open_model_call(
            client_ip(request), chat.model, container, data, admission_gate(request)
        )
    except NotAdmitted:
        await admitted(request)  # raises the refusal, or the admission's failure
        raise RuntimeError("the call's job was not written, yet its admission let it in") from None
    except JobError as error:
        raise from_job_error(error) from None
    # The caller's quota (node/api/auth.py): settled when this handler returns, to the tokens
    # the call used (none if it fails before the model answers).
    record_usage(request, call.id, 0)
    report = _Report(request, call.id, chat.model, "stream" if chat.stream else "complete", started)
    async with call:
        await admitted(request)  # decided in the job's round already; never call a model unadmitted
        call.bill_to(caller_of(request))  # the job's row, once finished, is the caller's usage record
        try:
            work = _stream(request, call, chat, report) if chat.stream else _complete(request, call, chat, report)
            return await until_disconnect(request, work, lambda: report.sent)
        except ClientGone:
            report.done("client_gone")
            return web.Response(status=CLIENT_CLOSED)
        except OpenAIError as error:
            error.headers.setdefault(JOB_HEADER, call.id)
            raise


class _Report:
    """Tells /metrics how one model call went, and the caller's usage record what it used."""

    def __init__(self, request: web.Request, job_id: str, model: str, kind: str, started: float) -> None:
        self._request = request
        self._job_id = job_id
        self._metrics = request.app[METRICS]
        self._model = model
        self._kind = kind
        self.started = started
        self.first_token: float | None = None
        self.sent = False  # the whole answer is out: the client may leave
        self._done = False

    def done(self, outcome: str, usage: TokenUsage | None = None) -> None:
        if self._done:  # once per call (a client that leaves after its answer changes nothing)
            return
        self._done = True
        ended = time.perf_counter()
        if usage is not None:
            record_usage(self._request, self._job_id, usage.prompt_tokens + usage.completion_tokens)
        ttft = speed = None
        if self.first_token is not None:
            ttft = self.first_token - self.started
        if usage is not None and usage.completion_tokens:
            if self.first_token is not None:  # streams: the pace after the first token
                tokens, seconds = usage.completion_tokens - 1, ended - self.first_token
            else:
                tokens, seconds = usage.completion_tokens, ended - self.started
            if tokens > 0 and seconds > 0:
                speed = tokens / seconds
        asyncio.get_running_loop().call_soon(  # counted once the answer is on its way
            self._metrics.model_call,
            self._model,
            self._kind,
            outcome,
            usage.prompt_tokens if usage else None,
            usage.completion_tokens if usage else None,
            ttft,
            speed,
        )


def _storing(
    request: web.Request, call: ModelCall, result: ContainerResult, usage: TokenUsage | None = None
) -> asyncio.Future[None]:
    """Start storing the job's outcome (the caller's usage record) and settling the caller's quota,
    in one store hop: the quota's write is submitted first, so on SQLite both land in one group
    commit. Returns at once; the handler awaits it (shielded) before it returns."""
    return call.finish_soon(result, usage, along=lambda: start_settling(request))


async def _stored(request: web.Request, call: ModelCall, result: ContainerResult) -> None:
    """Store a failed call's outcome before its error is answered."""
    await asyncio.shield(_storing(request, call, result))


async def _answered(report: _Report, send: Callable[[], Awaitable[None]], storing: asyncio.Future[None]) -> None:
    """Send the answer while its outcome is being stored, then wait for the store.

    The store's round overlaps the answer's trip: the client has it one round earlier, and the
    request ends (its connection takes the next request) only once the outcome is stored. A
    read of the job by id waits for the write (JobQueue.outcome_pending); a crash in between
    loses what a crash just before the answer would lose: the outcome, never the job."""
    try:
        await send()
        report.sent = True
    finally:
        await asyncio.shield(storing)


async def _failed(
    request: web.Request, call: ModelCall, report: _Report, error: OpenAIError, reason: str
) -> OpenAIError:
    report.done(error.code or error.type)
    await _stored(request, call, ContainerResult(call.container, error=reason))
    return error


async def _complete(
    request: web.Request, call: ModelCall, chat: ChatCompletionRequest, report: _Report
) -> web.Response:
    headers = {JOB_HEADER: call.id}
    result = await call.complete()
    if result.failed:
        error = from_failure(result.error, result.failure, headers)
        report.done(error.code or error.type)
        await _stored(request, call, result)
        raise error
    answer = completion_from_output(result.output, chat.model, f"chatcmpl-{call.id}", int(time.time()))
    if answer is None:
        raise await _failed(
            request,
            call,
            report,
            OpenAIError(
                502, "The model container's answer is not a chat completion", type="server_error", headers=headers
            ),
            "the container's answer is not a chat completion",
        )
    usage = usage_of(answer.get("usage"))
    report.done("success", usage)
    storing = _storing(request, call, ContainerResult(call.container, output=answer), usage)
    response = web.Response(body=json_codec.dumps_bytes(answer), content_type="application/json", headers=headers)

    async def send() -> None:
        with contextlib.suppress(ConnectionError):  # the client left: aiohttp closes its connection quietly
            await response.prepare(request)
            await response.write_eof()

    await _answered(report, send, storing)
    return response


async def _stream(
    request: web.Request, call: ModelCall, chat: ChatCompletionRequest, report: _Report
) -> web.StreamResponse:
    headers = {JOB_HEADER: call.id}
    try:
        upstream = await call.open_stream()
    except ContainerFailed as refused:
        error = from_failure(refused.message, refused.failure, headers)
        report.done(error.code or error.type)
        await _stored(request, call, ContainerResult(call.container, error=refused.message, failure=refused.failure))
        raise error from None
    include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
    relay = ChunkRelay(chat.model, include_usage, f"chatcmpl-{call.id}", int(time.time()))
    response = web.StreamResponse(headers={**headers, **SSE_HEADERS})
    failure: str | None = None
    try:
        await response.prepare(request)
        try:
            async for data in upstream:
                events = relay.feed(data)
                if events:
                    await response.write(b"".join(events) if len(events) > 1 else events[0])
                    if report.first_token is None and relay.chunks:
                        report.first_token = time.perf_counter()
                if relay.error is not None:
                    break
            else:
                events = relay.end()
                if events:
                    await response.write(b"".join(events))
        except ContainerFailed as broke:  # the stream broke off after it started
            failure = broke.message
        failure = failure or relay.error
        if failure is not None:
            report.done("stream_failed")
            await _stored(request, call, ContainerResult(call.container, error=failure))
            await response.write(stream_error_event(failure))
            await response.write_eof()
        else:
            usage = relay.usage
            report.done("success", usage)
            storing = _storing(request, call, ContainerResult(call.container, output=relay.completion()), usage)

            async def send() -> None:
                await response.write(DONE)
                await response.write_eof()

            await _answered(report, send, storing)
    except ConnectionError:  # the client left while we wrote
        await call.fail(CLIENT_LEFT)
        raise ClientGone from None
    return response
