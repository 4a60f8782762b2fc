"""The container protocol over HTTP (client-contract.md, appendix).

Job calls (`run`, once per job and container) and streams go through the lean
keep-alive client in http1.py: aiohttp's client cost ~4x its CPU per call, a
quarter of the whole job path, and ~10x per stream (a /v1 stream's first token
waited for it). The resources fan-out, which is rare, uses the shared aiohttp
session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import aiohttp

from node import json_codec
from node.jobs.errors import ContainerFailed
from node.jobs.model import ContainerResult, Failure, Location
from node.logs import redact
from node.secrets import SecretScrubber
from node.services.directory import ContainerDirectory, Endpoint
from node.services.http1 import BodyTooLarge, Http1Error, Http1Pool

log = logging.getLogger(__name__)

MAX_ERROR_TEXT = 500
# Of an error answer (HTTP >= 400) on the aiohttp paths, only this much is read.
MAX_ERROR_BYTES = 64 * 1024


class NotStandardJson(ValueError):
    """A service answered NaN, Infinity or a lone surrogate, which standard JSON (the node's output) cannot carry."""


def _refuse_constant(name: str) -> Any:
    raise NotStandardJson(name)


# Like json.loads, but NaN and Infinity are refused (parse_constant is only called
# for them: no cost on ordinary answers).
_decode = json.JSONDecoder(parse_constant=_refuse_constant).decode


def parse_output(body: bytes) -> Any:
    """A service's answer as a JSON value that the node can store and send on.

    Raises NotStandardJson for NaN/Infinity and for a lone UTF-16 surrogate
    (`"\\ud800"`, which no UTF-8 text can hold), ValueError for anything else
    that is not JSON.
    """
    done, output = json_codec.fast_loads(body)
    if done:  # orjson refuses NaN, Infinity and lone surrogates: what it takes needs no more checks
        return output
    if body[:3] == b"\xef\xbb\xbf":  # a UTF-8 byte order mark, which json.loads also skips
        body = body[3:]
    output = _decode(body.decode("utf-8"))
    # Surrogates come only from \uD8xx-\uDFxx escapes: look closer only when one is there.
    if b"\\ud" in body or b"\\uD" in body:
        try:
            json_codec.dumps_bytes(output)
        except UnicodeEncodeError:
            raise NotStandardJson("a lone UTF-16 surrogate") from None
    return output


async def _read_at_most(content: aiohttp.StreamReader, limit: int) -> tuple[bytes, bool]:
    """Up to `limit` bytes of a body, and whether there was more (the rest is not read)."""
    parts: list[bytes] = []
    size = 0
    while size <= limit:
        part = await content.read(limit + 1 - size)
        if not part:
            return b"".join(parts), False
        parts.append(part)
        size += len(part)
    body = b"".join(parts)
    return body[:limit], True


# (container, kind "run" | "stream", outcome, seconds): metrics, passed in by app.py.
CallObserver = Callable[[str, str, str, float], None]


class StreamFailed(ContainerFailed):
    """A stream that failed before its output started (status 502 on /api/jobs/stream)."""


def _headers(endpoint: Endpoint) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if endpoint.bearer:
        headers["Authorization"] = f"Bearer {endpoint.bearer}"
    return headers


def _error_text(body: bytes) -> str:
    # A service may echo its request (our bearer token) in an error: never pass that on.
    text = redact(body.decode("utf-8", errors="replace").strip())
    return text if len(text) <= MAX_ERROR_TEXT else text[:MAX_ERROR_TEXT] + "…"


def _error_detail(body: bytes) -> str:
    """A service's `{"error": message}` as its message; any other body as text."""
    try:
        message = json.loads(body).get("error")
    except (ValueError, UnicodeDecodeError, AttributeError):
        message = None
    return redact(message) if isinstance(message, str) else _error_text(body)


def _http_failure(status: int) -> Failure:
    # 4xx but 408/429: the service judged the input (a 400 names what is wrong with it).
    return Failure.REFUSED if 400 <= status < 500 and status not in (408, 429) else Failure.FAILED


def utf8_split(buffer: bytes) -> tuple[bytes, bytes]:
    """Split `buffer` into whole UTF-8 characters and an incomplete tail.

    The client decodes each chunk on its own, so a character cut in two would
    break it; the tail waits for the next chunk.
    """
    end = len(buffer)
    for back in range(1, min(4, end) + 1):
        byte = buffer[end - back]
        if byte & 0b1100_0000 == 0b1000_0000:  # continuation byte: keep looking
            continue
        if byte & 0b1000_0000 == 0:  # ASCII: complete
            return buffer, b""
        needed = 4 if byte >= 0xF0 else 3 if byte >= 0xE0 else 2
        if back >= needed:
            return buffer, b""
        return buffer[: end - back], buffer[end - back :]
    return buffer, b""


class HttpServiceGateway:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        calls: Http1Pool,
        directory: ContainerDirectory,
        stream_timeout: float,
        resources_timeout: float,
        observe_call: CallObserver | None = None,
        *,
        max_result_bytes: int | None = None,
        max_stream_bytes: int | None = None,
        max_stream_seconds: float | None = None,
        scrubber: SecretScrubber | None = None,
    ) -> None:
        """`max_result_bytes` must be the limit `calls` was built with (it names it in errors)."""
        self._session = session
        self._calls = calls
        self._directory = directory
        self._stream_timeout = stream_timeout
        self._resources_timeout = resources_timeout
        self._observe_call = observe_call
        self._max_result_bytes = max_result_bytes
        self._max_stream_bytes = max_stream_bytes
        self._max_stream_seconds = max_stream_seconds
        self._scrubber = scrubber or SecretScrubber()

    def _observed(self, container_id: str, kind: str, outcome: str, started: float) -> None:
        if self._observe_call is not None:
            try:
                self._observe_call(container_id, kind, outcome, time.perf_counter() - started)
            except Exception:  # metrics must never fail a job
                log.exception("container call observer failed")

    def _endpoint(self, container_id: str) -> Endpoint:
        endpoint = self._directory.endpoint(container_id)
        if endpoint is None:
            reason = self._directory.unavailable_reason(container_id)
            raise StreamFailed(
                f"Container {container_id} is not available: {reason}", {"container": container_id}, Failure.UNAVAILABLE
            )
        return endpoint

    async def run(
        self,
        container_id: str,
        data: Any,
        source: Location,
        destination: Location,
        requires_proof: bool,
    ) -> ContainerResult:
        try:
            endpoint = self._endpoint(container_id)
        except StreamFailed as error:
            return ContainerResult(container_id, error=error.message, failure=error.failure)
        payload = {
            "source": int(source),
            "destination": int(destination),
            "data": data,
            "requires_proof": requires_proof,
        }
        started = time.perf_counter()
        try:
            response = await self._calls.request(
                "POST",
                f"{endpoint.base_url}/service_output",
                json_codec.dumps_bytes(payload),
                _headers(endpoint),
                endpoint.timeout,
            )
        except asyncio.CancelledError:
            self._observed(container_id, "run", "cancelled", started)
            raise
        except TimeoutError:
            self._observed(container_id, "run", "timeout", started)
            return ContainerResult(
                container_id, error=f"container did not answer within {endpoint.timeout:g}s", failure=Failure.TIMEOUT
            )
        except BodyTooLarge:
            self._observed(container_id, "run", "too_large", started)
            return ContainerResult(
                container_id,
                error=f"container answer is larger than jobs.max_result_bytes ({self._max_result_bytes} bytes)",
                failure=Failure.FAILED,
            )
        except (Http1Error, ValueError) as error:  # ValueError: a URL or header it cannot send
            self._observed(container_id, "run", "unreachable", started)
            # A managed container that died under the call: say that, not just "disconnected".
            explain = getattr(self._directory, "explain_broken_call", None)
            reason = await explain(container_id) if explain is not None else None
            if reason:
                return ContainerResult(
                    container_id,
                    error=f"container {container_id} died during the call: {reason}",
                    failure=Failure.UNAVAILABLE,
                )
            return ContainerResult(
                container_id, error=f"could not reach the container: {error}", failure=Failure.UNAVAILABLE
            )
        status, body = response.status, response.body
        try:
            output = parse_output(body)
        except NotStandardJson as error:
            self._observed(container_id, "run", "bad_output", started)
            return ContainerResult(
                container_id,
                error=f"container output is not standard JSON (it holds {error}), so it cannot be stored or sent",
                failure=Failure.FAILED,
            )
        except (ValueError, UnicodeDecodeError, RecursionError):
            self._observed(container_id, "run", "bad_output", started)
            return ContainerResult(
                container_id,
                error=f"container replied with non-JSON (HTTP {status}): {_error_text(body)}",
                failure=Failure.FAILED,
            )
        if self._scrubber.may_hold(body):
            output = self._scrubber.value(output)
        if status >= 400:
            self._observed(container_id, "run", "http_error", started)
            # The reference ignores the status; an error status is a failure to operators.
            message = output.get("error") if isinstance(output, dict) else None
            detail = redact(message) if isinstance(message, str) else _error_text(body)
            return ContainerResult(
                container_id,
                error=f"container answered HTTP {status}: {detail}",
                failure=_http_failure(status),
            )
        self._observed(container_id, "run", "ok", started)
        return ContainerResult(container_id, output=output)

    async def stream(self, container_id: str, data: Any) -> AsyncIterator[bytes]:
        """Yield b"" once the service accepted the request, then its output in whole characters."""
        started = time.perf_counter()
        outcome = "cancelled"  # the consumer stopped early: the client left, or shutdown
        try:
            async with contextlib.aclosing(self._stream(container_id, data)) as chunks:
                async for chunk in chunks:
                    yield chunk
            outcome = "ok"
        except StreamFailed:
            outcome = "failed"
            raise
        finally:
            self._observed(container_id, "stream", outcome, started)

    async def _stream(self, container_id: str, data: Any) -> AsyncGenerator[bytes, None]:
        endpoint = self._endpoint(container_id)
        payload = {"source": int(Location.OFFCHAIN), "destination": int(Location.STREAM), "data": data}
        began = time.monotonic()
        try:
            # read_timeout bounds each wait for bytes (the head included), total the whole stream.
            response = await self._calls.stream(
                "POST",
                f"{endpoint.base_url}/service_output",
                json_codec.dumps_bytes(payload),
                _headers(endpoint),
                read_timeout=self._stream_timeout,
                total_timeout=self._max_stream_seconds,
            )
        except TimeoutError:
            raise StreamFailed(
                "Container did not answer in time", {"container": container_id}, Failure.TIMEOUT
            ) from None
        except (Http1Error, ValueError) as error:  # ValueError: a URL or header it cannot send
            raise StreamFailed(
                f"Could not reach the container: {error}", {"container": container_id}, Failure.UNAVAILABLE
            ) from None
        try:
            if response.status >= 400:
                body = await response.read_at_most(MAX_ERROR_BYTES)
                raise StreamFailed(
                    f"Container answered HTTP {response.status}: {_error_detail(body)}",
                    {"container": container_id},
                    _http_failure(response.status),
                )
            yield b""
            tail = b""
            received = 0
            limit = self._max_stream_bytes
            scrubber = self._scrubber.stream()
            while True:
                try:
                    chunk = await response.read()
                except TimeoutError:
                    seconds = self._max_stream_seconds
                    if seconds is not None and time.monotonic() - began >= seconds - 0.01:
                        raise StreamFailed(
                            f"Container stream lasted longer than jobs.max_stream_seconds ({seconds:g}s)",
                            {"container": container_id},
                        ) from None
                    raise StreamFailed(
                        f"Container sent nothing for {self._stream_timeout:g}s",
                        {"container": container_id},
                        Failure.TIMEOUT,
                    ) from None
                except Http1Error as error:
                    raise StreamFailed(f"Container stream broke: {error}", {"container": container_id}) from None
                if not chunk:
                    break
                received += len(chunk)
                if limit is not None and received > limit:
                    raise StreamFailed(  # read no further: release() closes the connection
                        f"Container stream is longer than jobs.max_stream_bytes ({limit} bytes)",
                        {"container": container_id},
                    )
                whole, tail = utf8_split(tail + scrubber.feed(chunk))
                if whole:
                    yield whole
            tail += scrubber.end()
            if tail:
                yield tail
        finally:
            response.release()

    async def resources(self, model_id: str | None) -> dict[str, Any]:
        """Ask every available service in parallel; the slow and the failed are left out."""
        params = {"model_id": model_id} if model_id is not None else None
        limit = self._max_result_bytes if self._max_result_bytes is not None else 2**62

        async def ask(endpoint: Endpoint) -> tuple[str, Any] | None:
            try:
                async with self._session.get(
                    f"{endpoint.base_url}/service-resources",
                    params=params,
                    headers=_headers(endpoint),
                    timeout=aiohttp.ClientTimeout(total=self._resources_timeout),
                ) as response:
                    if response.status >= 400:
                        return None
                    body, more = await _read_at_most(response.content, limit)
                    if more:
                        log.warning(
                            "container %s answered /service-resources with more than jobs.max_result_bytes"
                            " (%d bytes): left out",
                            endpoint.container_id,
                            limit,
                        )
                        return None
                    output = parse_output(body)
                    if self._scrubber.may_hold(body):
                        output = self._scrubber.value(output)
                    return endpoint.container_id, output
            except (TimeoutError, aiohttp.ClientError, ValueError, UnicodeDecodeError, RecursionError):
                return None

        endpoints = [
            endpoint
            for info in self._directory.running_info()
            if (endpoint := self._directory.endpoint(info["id"])) is not None
        ]
        answers = await asyncio.gather(*(ask(endpoint) for endpoint in endpoints))
        return dict(answer for answer in answers if answer is not None)
