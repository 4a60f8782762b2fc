"""A service that takes its time: `{"sleep": seconds}` in data delays the echo.

Run as a process (`python tests/support/slow_service.py`, env PORT) so that it
outlives a node that the test kills.
"""

from __future__ import annotations

import asyncio
import os

from aiohttp import web


async def service_output(request: web.Request) -> web.Response:
    body = await request.json()
    data = body.get("data")
    if isinstance(data, dict) and isinstance(data.get("sleep"), (int, float)):
        await asyncio.sleep(data["sleep"])
    return web.json_response(data)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "healthy"})


def main() -> None:
    app = web.Application()
    app.router.add_post("/service_output", service_output)
    app.router.add_get("/health", health)
    web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), print=None, access_log=None)


if __name__ == "__main__":
    main()
