"""A service that takes its time, for the Docker fault tests: `{"sleep": s}` delays the echo.

Mounted into the hello-world image (which has aiohttp) and run with `command`, so it must run on
Debian bookworm's aiohttp 3.8. Listens on HOST:PORT (default 0.0.0.0:3000, as in a container).
"""

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


app = web.Application()
app.router.add_post("/service_output", service_output)
app.router.add_get("/health", health)
web.run_app(app, host=os.environ.get("HOST", "0.0.0.0"), port=int(os.environ.get("PORT", "3000")), print=None)
