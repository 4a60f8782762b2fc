"""Who the client is: trusted proxies and X-Forwarded-For, IPv4-mapped addresses,
and PUT /api/status for local callers only (configurable networks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from node.app import build_app
from node.config import parse_config
from tests.support.processes import free_port, node_config

STATUS = {"id": "ext-1", "status": "success", "containers": ["echo"], "data": {}}


async def make(aiohttp_client: Any, tmp_path: Path, **server: Any) -> TestClient:
    config = parse_config(
        node_config(tmp_path, [{"id": "echo", "url": f"http://127.0.0.1:{free_port()}"}], server=server), environ={}
    )
    return await aiohttp_client(build_app(config))


async def test_status_is_local_only_by_default(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await make(aiohttp_client, tmp_path)
    response = await client.put("/api/status", json=STATUS)
    assert response.status == 200 and await response.json() == {}
    # Without trusted proxies, X-Forwarded-For is ignored: a local caller stays local.
    response = await client.put("/api/status", json=STATUS, headers={"X-Forwarded-For": "203.0.113.5"})
    assert response.status == 200


async def test_a_client_behind_a_trusted_proxy_is_not_local(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await make(aiohttp_client, tmp_path, trusted_proxies=["127.0.0.0/8"])
    response = await client.put("/api/status", json=STATUS, headers={"X-Forwarded-For": "203.0.113.5"})
    assert response.status == 403
    assert response.content_type == "application/json" and await response.json() == {"error": "Unauthorized"}
    # Its jobs are its own: keyed by the forwarded address, not the proxy's.
    assert (await client.put("/api/status", json=STATUS)).status == 200  # recorded for 127.0.0.1
    mine = await (await client.get("/api/jobs?id=ext-1")).json()
    theirs = await (await client.get("/api/jobs?id=ext-1", headers={"X-Forwarded-For": "203.0.113.5"})).json()
    assert [job["id"] for job in mine] == ["ext-1"] and theirs == []


async def test_status_networks_are_configurable(aiohttp_client: Any, tmp_path: Path) -> None:
    client = await make(
        aiohttp_client, tmp_path, trusted_proxies=["127.0.0.1"], status_allowed_networks=["10.1.0.0/16"]
    )
    # Loopback is no longer allowed; the configured network is, IPv4-mapped or not.
    assert (await client.put("/api/status", json=STATUS)).status == 403
    for forwarded in ("10.1.2.3", "::ffff:10.1.2.3"):
        response = await client.put("/api/status", json=STATUS, headers={"X-Forwarded-For": forwarded})
        assert response.status == 200, forwarded
