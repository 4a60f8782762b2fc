"""A service that takes every job and never answers: the POST load's jobs park here.

Pointing the POST /api/jobs load at it keeps the node's workers waiting instead of
running jobs, so that figure measures accepting and storing alone; running jobs is
measured by the end-to-end load against hello-world.

Run: python bench/park.py --port P
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web


async def park(request: web.Request) -> web.Response:
    await asyncio.Event().wait()  # until the node hangs up
    raise AssertionError("unreachable")


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "healthy"})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/service_output", park)
    app.router.add_get("/health", health)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None, shutdown_timeout=0.1)


if __name__ == "__main__":
    main()
