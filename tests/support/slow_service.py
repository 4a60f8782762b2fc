"""A service that takes its time: `{"sleep": seconds}` in data delays the echo.

Run as a process (`python tests/support/slow_service.py`, env PORT) so that it
outlives a node that the test kills. With env CALLS_FILE, every call it receives
appends its `data` as one JSON line there first (the fault suite counts them to
prove no job ran twice). With env DELIVERY_SHAPE=1, a string `data` (an on-chain input's
hex) comes back in the five-field shape the node delivers as abi.encode(bytes, bytes).
"""

from __future__ import annotations

import asyncio
import json
import os

from aiohttp import web


def _record(data: object) -> None:
    path = os.environ.get("CALLS_FILE")
    if path:
        # One write() of one line in append mode: lines never interleave.
        with open(path, "a", encoding="utf-8") as sink:
            sink.write(json.dumps(data) + "\n")


async def service_output(request: web.Request) -> web.Response:
    body = await request.json()
    data = body.get("data")
    _record(data)
    if isinstance(data, dict) and isinstance(data.get("sleep"), (int, float)):
        await asyncio.sleep(data["sleep"])
    if os.environ.get("DELIVERY_SHAPE") == "1" and isinstance(data, str):
        empty = {"processed_input": "", "processed_output": "", "proof": None}
        return web.json_response({"raw_input": data, "raw_output": data, **empty})
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
