"""No secret in a log line or an error: a service that echoes our bearer token back
in its error, and a Docker password in the config."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.support.processes import NodeProcess, node_config

BEARER = "svc-bearer-7f3a9c2e"
DOCKER_PASSWORD = "docker-pass-4411"


async def leaky(request: web.Request) -> web.Response:
    # A careless service: its error repeats the request's Authorization header.
    return web.json_response({"error": f"token rejected: {request.headers.get('Authorization')}"}, status=401)


async def leaky_text(request: web.Request) -> web.Response:
    return web.Response(status=500, text=f"crash; headers were {dict(request.headers)}")


async def test_secrets_stay_out_of_errors_and_logs(tmp_path: Path) -> None:
    app = web.Application()
    app.router.add_post("/json/service_output", leaky)
    app.router.add_post("/text/service_output", leaky_text)
    async with TestServer(app, host="127.0.0.1") as service:
        base = str(service.make_url("")).rstrip("/")
        config = node_config(
            tmp_path,
            [
                {"id": "json", "url": f"{base}/json", "bearer": BEARER},
                {"id": "text", "url": f"{base}/text", "bearer": BEARER},
            ],
            docker={"username": "op", "password": DOCKER_PASSWORD},
            log={"level": "DEBUG"},
        )
        node = NodeProcess(config, tmp_path)
        await asyncio.to_thread(node.start)
        try:
            async with aiohttp.ClientSession() as session:
                ids = []
                for container in ("json", "text"):
                    async with session.post(f"{node.url}/api/jobs", json={"containers": [container], "data": {}}) as r:
                        ids.append((await r.json())["id"])
                for _ in range(100):
                    async with session.get(f"{node.url}/api/jobs", params=[("id", i) for i in ids]) as r:
                        results = await r.json()
                    if all(item["status"] != "running" for item in results):
                        break
                    await asyncio.sleep(0.05)
        finally:
            await asyncio.to_thread(node.stop)
    errors = [item["result"]["error"] for item in results]
    assert all(item["status"] == "failed" for item in results)
    assert errors[0] == "container answered HTTP 401: token rejected: Bearer [REDACTED]"
    assert errors[1].startswith("container replied with non-JSON (HTTP 500): crash;")
    assert "'Authorization': 'Bearer [REDACTED]'" in errors[1]
    everything = "\n".join(errors) + node.log_text() + (tmp_path / "node.log").read_text()
    for secret in (BEARER, DOCKER_PASSWORD):
        assert secret not in everything, secret
