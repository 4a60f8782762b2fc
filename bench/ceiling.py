"""The ceiling: a bare aiohttp server with trivial handlers for the node's job routes.

It stores nothing durably and validates next to nothing, so its rate is what
aiohttp on one core can do for the same requests; the node is measured against it.

    POST /api/jobs          {"id": uuid}; a job for a container in --service runs in the background
    GET  /api/jobs?id=      a small JSON list: the job's state if it ran here, else a canned result
    POST /api/jobs/stream   the id line, then the service's stream relayed chunk by chunk
    GET  /info              {"pending": {"offchain": n}}

Run: python bench/ceiling.py --port P [--service NAME=URL ...]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

SERVICES = web.AppKey("services", dict)
SESSION = web.AppKey("session", aiohttp.ClientSession)
RESULTS = web.AppKey("results", dict)
TASKS = web.AppKey("tasks", set)


def _json(body: object) -> web.Response:
    return web.Response(body=json.dumps(body).encode(), content_type="application/json")


async def _run(app: web.Application, job_id: str, url: str, container: str, data: object) -> None:
    payload = json.dumps({"source": 1, "destination": 1, "data": data, "requires_proof": False})
    async with app[SESSION].post(
        f"{url}/service_output", data=payload, headers={"Content-Type": "application/json"}
    ) as response:
        output = json.loads(await response.read())
    app[RESULTS][job_id] = {"id": job_id, "status": "success", "result": {"container": container, "output": output}}


async def submit(request: web.Request) -> web.Response:
    body = json.loads(await request.read())
    job_id = str(uuid.uuid4())
    container = body["containers"][0]
    url = request.app[SERVICES].get(container)
    if url is not None:
        request.app[RESULTS][job_id] = {"id": job_id, "status": "running", "result": None}
        task = asyncio.ensure_future(_run(request.app, job_id, url, container, body.get("data")))
        request.app[TASKS].add(task)
        task.add_done_callback(request.app[TASKS].discard)
    return _json({"id": job_id})


async def results(request: web.Request) -> web.Response:
    answers = []
    for job_id in request.query.getall("id", []):
        known = request.app[RESULTS].get(job_id)
        if known is None:  # the stored-job GET load: answer as if found
            known = {
                "id": job_id,
                "status": "success",
                "result": {"container": "hello-world", "output": {"prompt": "hello"}},
            }
        answers.append(known)
    return _json(answers)


async def stream(request: web.Request) -> web.StreamResponse:
    body = json.loads(await request.read())
    container = body["containers"][0]
    payload = json.dumps({"source": 1, "destination": 2, "data": body.get("data")})
    async with request.app[SESSION].post(
        f"{request.app[SERVICES][container]}/service_output",
        data=payload,
        headers={"Content-Type": "application/json"},
    ) as upstream:
        response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        await response.prepare(request)
        await response.write(f"{uuid.uuid4()}\n".encode())
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
    return response


async def info(request: web.Request) -> web.Response:
    return _json({"pending": {"offchain": len(request.app[TASKS]), "onchain": 0}})


async def health(request: web.Request) -> web.Response:
    return _json({"status": "healthy"})


async def _session(app: web.Application) -> AsyncIterator[None]:
    app[SESSION] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=30))
    yield
    await app[SESSION].close()


def build_app(services: dict[str, str]) -> web.Application:
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app[SERVICES] = services
    app[RESULTS] = {}
    app[TASKS] = set()
    app.cleanup_ctx.append(_session)
    app.router.add_post("/api/jobs", submit)
    app.router.add_get("/api/jobs", results)
    app.router.add_post("/api/jobs/stream", stream)
    app.router.add_get("/info", info)
    app.router.add_get("/health", health)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--service", action="append", default=[], help="NAME=URL of a service to relay to")
    args = parser.parse_args()
    services = dict(item.split("=", 1) for item in args.service)
    web.run_app(build_app(services), host=args.host, port=args.port, print=None, access_log=None, loop=new_loop())


def new_loop() -> asyncio.AbstractEventLoop:
    """The event loop the node runs on (node/cli.py): uvloop where installed, so the comparison is fair."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


if __name__ == "__main__":
    main()
