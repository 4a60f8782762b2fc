"""The container side of the Infernet node protocol, shared by every service in containers/.

A service supplies a name, a function that turns a job into JSON, and optionally a function that
turns a job into text pieces for streaming. This module owns the HTTP surface:

    POST /service_output      {"source": int, "destination": int, "data": any, "requires_proof"?: bool}
                              destination 2 (STREAM) -> chunked text/plain, otherwise JSON
    GET  /service-resources   capabilities, or {"supported": bool} with ?model_id=X
    GET  /health              {"status": "healthy"}

Every error is a JSON object {"error": "..."}; a traceback never reaches the client.
It must run on aiohttp 3.8 (Debian bookworm's python3-aiohttp) and on current 3.x, so it sticks
to APIs present in both.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import platform
import sys
from collections.abc import AsyncGenerator, AsyncIterable, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

ONCHAIN, OFFCHAIN, STREAM = 0, 1, 2
JOB_LOCATIONS = (ONCHAIN, OFFCHAIN, STREAM)
RESOURCES_VERSION = "0.1.0"
MAX_BODY_BYTES = 4 * 1024 * 1024

log = logging.getLogger("service")

# aiohttp >= 3.9 warns about plain string app keys; 3.8 has no AppKey. Use whichever exists.
_AppKey: Any = getattr(web, "AppKey", None)
SERVICE_KEY: Any = _AppKey("service", object) if _AppKey else "service"
DELAY_KEY: Any = _AppKey("stream_delay_s", float) if _AppKey else "stream_delay_s"


class BadInput(Exception):
    """The request or its `data` is not acceptable; the message is sent back with HTTP 400."""


@dataclass(frozen=True)
class Job:
    """One validated /service_output request."""

    source: int
    destination: int
    data: Any
    requires_proof: bool

    @property
    def wants_stream(self) -> bool:
        return self.destination == STREAM


# compute may be sync or async; stream must validate eagerly (raise BadInput before returning)
# so that a bad request still gets a 400 before the 200 stream has started. stream may return an
# async iterable (e.g. an async generator fed by a worker thread): it is closed (aclose) when the
# client goes away, so the producer can stop.
ComputeFn = Callable[[Job], Any | Awaitable[Any]]
StreamFn = Callable[[Job], Iterable[str] | AsyncIterable[str] | Awaitable[Iterable[str] | AsyncIterable[str]]]


@dataclass(frozen=True)
class Service:
    name: str
    compute: ComputeFn
    stream: StreamFn | None = None  # None: stream the JSON text of compute()
    default_models: tuple[str, ...] = ()  # model ids served when env MODELS is unset
    stream_delay_ms_default: int = 0
    description: str = ""
    stream_content_type: str = "text/plain"  # e.g. application/x-ndjson for one JSON object per line
    resources: Callable[[], dict[str, Any]] | None = None  # extra keys for /service-resources


def env_int(name: str, default: int, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise SystemExit(f"{name} must be >= {minimum}, got {value}")
    return value


def supported_models(service: Service) -> tuple[str, ...]:
    raw = os.environ.get("MODELS")
    if raw is None or raw.strip() == "":
        return service.default_models or (service.name,)
    return tuple(m.strip() for m in raw.split(",") if m.strip())


# ---------------------------------------------------------------------------------------------
# Request parsing


def _reject_constant(name: str) -> Any:
    # Python's json accepts NaN/Infinity, which are not JSON and could not be echoed back as JSON.
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text} is too large")
    return value


def parse_json(body: bytes) -> Any:
    try:
        return json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float)
    except UnicodeDecodeError:
        raise BadInput("request body is not valid UTF-8") from None
    except RecursionError:  # e.g. 100k nested brackets: refuse, don't answer 500
        raise BadInput("request body is nested too deeply") from None
    except ValueError as exc:
        raise BadInput(f"request body is not valid JSON: {exc}") from exc


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_job(body: bytes) -> Job:
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise BadInput(
            'request body must be a JSON object like {"source": 1, "destination": 1, "data": ...}, '
            f"got {type(payload).__name__}"
        )
    missing = [key for key in ("source", "destination", "data") if key not in payload]
    if missing:
        raise BadInput("request body is missing " + ", ".join(repr(k) for k in missing))
    for key in ("source", "destination"):
        value = payload[key]
        if not _is_int(value) or value not in JOB_LOCATIONS:
            raise BadInput(f"{key!r} must be 0 (onchain), 1 (offchain) or 2 (stream), got {value!r}")
    requires_proof = payload.get("requires_proof")
    if requires_proof is None:  # the node omits it for streams; clients may send null
        requires_proof = False
    if not isinstance(requires_proof, bool):
        raise BadInput(f"'requires_proof' must be true, false or null, got {requires_proof!r}")
    return Job(payload["source"], payload["destination"], payload["data"], requires_proof)


# ---------------------------------------------------------------------------------------------
# HTTP layer


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn every failure into a JSON object: the node forwards container errors to clients."""
    try:
        return await handler(request)
    except BadInput as exc:
        return error_response(400, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text or exc.reason or "error"
        prefix = f"{exc.status}: "
        if message.startswith(prefix):  # aiohttp's default text is "404: Not Found"
            message = message[len(prefix) :]
        allow = exc.headers.get("Allow")
        if exc.status == 404:
            message = f"no such endpoint: {request.method} {request.path}"
        elif exc.status == 405:
            message = f"method {request.method} is not allowed on {request.path} (allowed: {allow})"
        return error_response(exc.status, message, {"Allow": allow} if allow else None)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, f"internal error in {request.app[SERVICE_KEY].name}: {type(exc).__name__}")


def resources_document(service: Service) -> dict[str, Any]:
    return {
        "version": RESOURCES_VERSION,
        "service_id": service.name,
        "hardware_capabilities": [
            {
                "capability_id": "cpu",
                "type": "CPU",
                "cores": os.cpu_count() or 1,
                "architecture": platform.machine(),
                "os": platform.system(),
                "python": platform.python_version(),
            }
        ],
        "compute_capability": [
            {
                "id": service.name,
                "type": "custom",
                "description": service.description,
                "models": list(supported_models(service)),
            }
        ],
        **(service.resources() if service.resources is not None else {}),
    }


async def handle_resources(request: web.Request) -> web.Response:
    service: Service = request.app[SERVICE_KEY]
    if "model_id" not in request.query:
        return web.json_response(resources_document(service))
    model_id = request.query["model_id"]
    models = supported_models(service)
    if model_id in models:
        return web.json_response({"supported": True})
    return web.json_response(
        {
            "supported": False,
            "error": f"model {model_id!r} is not served by {service.name} (serves: {', '.join(models)})",
        }
    )


async def handle_health(request: web.Request) -> web.Response:
    return web.json_response({"status": "healthy"})


async def run_compute(service: Service, job: Job) -> Any:
    result = service.compute(job)
    if inspect.isawaitable(result):
        result = await result
    return result


async def _aiter_pieces(pieces: Iterable[str] | AsyncIterable[str]) -> AsyncGenerator[str, None]:
    if isinstance(pieces, AsyncIterable):
        async for piece in pieces:
            yield piece
    else:
        for piece in pieces:
            yield piece


async def stream_pieces(
    request: web.Request,
    pieces: Iterable[str] | AsyncIterable[str],
    delay_s: float,
    content_type: str = "text/plain",
) -> web.StreamResponse:
    response = web.StreamResponse(status=200)
    response.content_type = content_type
    response.charset = "utf-8"
    response.enable_chunked_encoding()
    await response.prepare(request)
    iterator = _aiter_pieces(pieces)
    try:
        first = True
        async for piece in iterator:
            if not piece:
                continue
            if not first and delay_s > 0:
                await asyncio.sleep(delay_s)
            first = False
            # Each piece is encoded on its own, so a chunk never splits a UTF-8 character.
            await response.write(piece.encode("utf-8"))
        await response.write_eof()
    except ConnectionResetError:
        log.info("stream client went away")
    finally:
        await iterator.aclose()
        aclose = getattr(pieces, "aclose", None)
        if aclose is not None:  # tell an async producer to stop (no-op when it has finished)
            await aclose()
    return response


async def handle_service_output(request: web.Request) -> web.StreamResponse:
    service: Service = request.app[SERVICE_KEY]
    job = parse_job(await request.read())
    if not job.wants_stream:
        result = await run_compute(service, job)
        try:
            text = json.dumps(result, allow_nan=False)
        except ValueError as exc:
            raise BadInput(f"the result cannot be written as JSON: {exc}") from exc
        return web.Response(text=text, content_type="application/json")
    if service.stream is not None:
        pieces: Any = service.stream(job)
        if inspect.isawaitable(pieces):  # an async stream function validates, then returns pieces
            pieces = await pieces
    else:
        pieces = [json.dumps(await run_compute(service, job), allow_nan=False)]
    return await stream_pieces(request, pieces, request.app[DELAY_KEY], service.stream_content_type)


def build_app(service: Service) -> web.Application:
    app = web.Application(middlewares=[json_errors], client_max_size=MAX_BODY_BYTES)
    app[SERVICE_KEY] = service
    app[DELAY_KEY] = env_int("STREAM_DELAY_MS", service.stream_delay_ms_default) / 1000.0
    app.router.add_post("/service_output", handle_service_output)
    app.router.add_get("/service-resources", handle_resources)
    app.router.add_get("/health", handle_health)
    return app


def run(service: Service) -> None:
    """Serve `service` on env HOST (default 0.0.0.0) and env PORT (default 3000) until SIGTERM/SIGINT."""
    logging.basicConfig(
        stream=sys.stderr,
        level=os.environ.get("LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    host = os.environ.get("HOST", "0.0.0.0")
    port = env_int("PORT", 3000, minimum=1)
    log.info("%s listening on %s:%d (models: %s)", service.name, host, port, ", ".join(supported_models(service)))
    app = build_app(service)  # reads STREAM_DELAY_MS: a bad value fails here, not per request
    web.run_app(
        app,
        host=host,
        port=port,
        print=None,
        shutdown_timeout=5.0,  # docker stop waits 10 s; finish sooner
        access_log_format='%a "%r" %s %bB %Tfs',
    )
