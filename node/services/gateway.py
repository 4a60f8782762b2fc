"""The container protocol over HTTP (client-contract.md, appendix).

Job calls (`run`, once per job and container) go through the lean keep-alive
client in http1.py: aiohttp's client cost ~4x its CPU per call, a quarter of
the whole job path. Streams and the resources fan-out, which are rarer, use the
shared aiohttp session.
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

from node.jobs.errors import ErrorKind, JobError
from node.jobs.model import ContainerResult, Location
from node.logs import redact
from node.services.directory import ContainerDirectory, Endpoint
from node.services.http1 import Http1Error, Http1Pool

log = logging.getLogger(__name__)

MAX_ERROR_TEXT = 500
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

# (container, kind "run" | "stream", outcome, seconds): metrics, passed in by app.py.
CallObserver = Callable[[str, str, str, float], None]


class StreamFailed(JobError):
    """A stream whose service failed before its output started."""

    kind = ErrorKind.SERVICE_FAILED


def _headers(endpoint: Endpoint) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    if endpoint.bearer:
        headers["Authorization"] = f"Bearer {endpoint.bearer}"
    return headers


def _error_text(body: bytes) -> str:
    # A service may echo its request (our bearer token) in an error: never pass that on.
    text = redact(body.decode("utf-8", errors="replace").strip())
    return text if len(text) <= MAX_ERROR_TEXT else text[:MAX_ERROR_TEXT] + "…"


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
    ) -> None:
        self._session = session
        self._calls = calls
        self._directory = directory
        self._stream_timeout = stream_timeout
        self._resources_timeout = resources_timeout
        self._observe_call = observe_call

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
            raise StreamFailed(f"Container {container_id} is not available: {reason}", {"container": container_id})
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
            return ContainerResult(container_id, error=error.message)
        payload = {
            "source": int(source),
            "destination": int(destination),
            "data": data,
            "requires_proof": requires_proof,
        }
        started = time.perf_counter()
        try:
            response = await self._calls.request(
                "POST", f"{endpoint.base_url}/service_output", _dumps(payload).encode(), _headers(endpoint),
                endpoint.timeout,
            )
        except asyncio.CancelledError:
            self._observed(container_id, "run", "cancelled", started)
            raise
        except TimeoutError:
            self._observed(container_id, "run", "timeout", started)
            return ContainerResult(container_id, error=f"container did not answer within {endpoint.timeout:g}s")
        except (Http1Error, ValueError) as error:  # ValueError: a URL or header it cannot send
            self._observed(container_id, "run", "unreachable", started)
            # A managed container that died under the call: say that, not just "disconnected".
            explain = getattr(self._directory, "explain_broken_call", None)
            reason = await explain(container_id) if explain is not None else None
            if reason:
                return ContainerResult(container_id, error=f"container {container_id} died during the call: {reason}")
            return ContainerResult(container_id, error=f"could not reach the container: {error}")
        status, body = response.status, response.body
        try:
            output = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            self._observed(container_id, "run", "bad_output", started)
            return ContainerResult(
                container_id, error=f"container replied with non-JSON (HTTP {status}): {_error_text(body)}"
            )
        if status >= 400:
            self._observed(container_id, "run", "http_error", started)
            # The reference ignores the status; an error status is a failure to operators.
            message = output.get("error") if isinstance(output, dict) else None
            detail = redact(message) if isinstance(message, str) else _error_text(body)
            return ContainerResult(container_id, error=f"container answered HTTP {status}: {detail}")
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
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=self._stream_timeout)
        try:
            response = await self._session.post(
                f"{endpoint.base_url}/service_output",
                data=_dumps(payload),
                headers=_headers(endpoint),
                timeout=timeout,
            )
        except TimeoutError:
            raise StreamFailed("Container did not answer in time", {"container": container_id}) from None
        except aiohttp.ClientError as error:
            raise StreamFailed(f"Could not reach the container: {error}", {"container": container_id}) from None
        try:
            if response.status >= 400:
                body = await response.read()
                raise StreamFailed(
                    f"Container answered HTTP {response.status}: {_error_text(body)}",
                    {"container": container_id},
                )
            yield b""
            tail = b""
            try:
                async for chunk in response.content.iter_any():
                    whole, tail = utf8_split(tail + chunk)
                    if whole:
                        yield whole
            except TimeoutError:
                raise StreamFailed(
                    f"Container sent nothing for {self._stream_timeout:g}s", {"container": container_id}
                ) from None
            except aiohttp.ClientError as error:
                raise StreamFailed(f"Container stream broke: {error}", {"container": container_id}) from None
            if tail:
                yield tail
        finally:
            response.release()

    async def resources(self, model_id: str | None) -> dict[str, Any]:
        """Ask every available service in parallel; the slow and the failed are left out."""
        params = {"model_id": model_id} if model_id is not None else None

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
                    return endpoint.container_id, json.loads(await response.read())
            except (TimeoutError, aiohttp.ClientError, ValueError, UnicodeDecodeError):
                return None

        endpoints = [
            endpoint
            for info in self._directory.running_info()
            if (endpoint := self._directory.endpoint(info["id"])) is not None
        ]
        answers = await asyncio.gather(*(ask(endpoint) for endpoint in endpoints))
        return dict(answer for answer in answers if answer is not None)
