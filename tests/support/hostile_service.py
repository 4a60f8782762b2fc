"""A service that misbehaves on request, for the node's hardening tests.

Run as a process (`python tests/support/hostile_service.py`, env PORT). What it does
is chosen by the job's `data`:

- `{"sleep": seconds, ...}`: waits that long first (non-streams).
- `{"huge": N}`: answers a JSON string of N bytes, with a Content-Length;
  `{"huge": N, "chunked": true}` sends it chunked, without one.
- `{"raw": "..."}`: answers exactly these bytes as the body (`NaN`, `"\\ud800"`, ...).
- `{"reflect": true}`: answers the request's headers, as a service that echoes them would.
- streams (`destination` 2): `{"stream_bytes": N}` streams N bytes in 64 KiB chunks;
  `{"drip": seconds}` sends a byte every 0.2 s for that long; `{"reflect": true}`
  streams the Authorization header split across several chunks.

Anything else is echoed back.
"""

from __future__ import annotations

import asyncio
import os

from aiohttp import web

CHUNK = 64 * 1024


async def _stream(request: web.Request, data: dict[str, object]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await response.prepare(request)
    if isinstance(data.get("stream_bytes"), int):
        left = int(data["stream_bytes"])  # type: ignore[call-overload]
        block = b"s" * CHUNK
        try:
            while left > 0:
                await response.write(block[: min(CHUNK, left)])
                left -= CHUNK
        except ConnectionError:
            return response
    elif isinstance(data.get("drip"), (int, float)):
        end = asyncio.get_running_loop().time() + float(data["drip"])  # type: ignore[arg-type]
        try:
            while asyncio.get_running_loop().time() < end:
                await response.write(b".")
                await asyncio.sleep(0.2)
        except ConnectionError:
            return response
    elif data.get("reflect"):
        text = f"you sent: {request.headers.get('Authorization', '')} (end)".encode()
        for start in range(0, len(text), 5):  # a token cut across chunks
            await response.write(text[start : start + 5])
            await asyncio.sleep(0.02)
    await response.write_eof()
    return response


async def service_output(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    data = body.get("data")
    if not isinstance(data, dict):
        return web.json_response(data)
    if body.get("destination") == 2:
        return await _stream(request, data)
    if isinstance(data.get("sleep"), (int, float)):
        await asyncio.sleep(float(data["sleep"]))
    if isinstance(data.get("huge"), int):
        size = int(data["huge"])
        if data.get("chunked"):
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            block = b"x" * CHUNK
            try:
                await response.write(b'"')
                for _ in range(size // CHUNK):
                    await response.write(block)
                await response.write(b'"')
                await response.write_eof()
            except ConnectionError:
                pass  # the node stopped reading: expected
            return response
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = size + 2
        await response.prepare(request)
        block = b"x" * CHUNK
        try:
            await response.write(b'"')
            left = size
            while left > 0:
                await response.write(block[: min(CHUNK, left)])
                left -= CHUNK
            await response.write(b'"')
            await response.write_eof()
        except ConnectionError:
            pass
        return response
    if isinstance(data.get("raw"), str):
        return web.Response(body=data["raw"].encode(), content_type="application/json")
    if data.get("reflect"):
        return web.json_response({"headers": dict(request.headers)})
    return web.json_response(data)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "healthy"})


async def resources(request: web.Request) -> web.Response:
    return web.json_response({"reflected": request.headers.get("Authorization", "")})


def main() -> None:
    app = web.Application()
    app.router.add_post("/service_output", service_output)
    app.router.add_get("/health", health)
    app.router.add_get("/service-resources", resources)
    web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), print=None, access_log=None)


if __name__ == "__main__":
    main()
