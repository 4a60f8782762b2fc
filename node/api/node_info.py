"""GET /health, /info, /resources."""

from __future__ import annotations

from aiohttp import web

from node import API_VERSION, __version__
from node.api.appkeys import CHAIN_ROLE, CHAIN_STATUS, CLAIM_COUNTS, CLUSTER, CONFIG, DIRECTORY, JOB_DESK, STORE_HEALTH
from node.api.render import json_response


async def health(request: web.Request) -> web.Response:
    store = request.app.get(STORE_HEALTH)
    failure = store.failure if store is not None else None
    if failure is None:
        return json_response({"status": "healthy"})
    # A store that cannot write (disk full...): no job can be accepted or finished, so
    # unhealthy, still with 200 (the client reads the body: client-contract.md 3.1).
    cause, since = failure
    return json_response({"status": "unhealthy", "store": {"status": "degraded", "cause": cause, "since": since}})


async def info(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    chain_status = request.app.get(CHAIN_STATUS)
    address, onchain = chain_status() if callable(chain_status) else ("", 0)
    chain_role = request.app.get(CHAIN_ROLE)
    cluster = request.app.get(CLUSTER)
    claims = request.app.get(CLAIM_COUNTS)
    return json_response(
        {
            # The REST contract's version; clients ignore it, tools compare it.
            "version": API_VERSION,
            "containers": request.app[DIRECTORY].running_info(),
            # Ours: configured containers that are not running, and why (an image that cannot be had...).
            "unavailable_containers": request.app[DIRECTORY].unavailable_info(),
            "pending": {"offchain": request.app[JOB_DESK].pending_offchain, "onchain": onchain},
            "chain": {"enabled": config.chain.enabled, "address": address}
            # Ours: "leader" sends the wallet's transactions; a "standby" takes over if it dies.
            | ({"role": chain_role()} if callable(chain_role) else {}),
            # Ours: the nodes sharing this store (their heartbeats) and who holds which lease.
            # and, on a shared store, the jobs this node took over from dead nodes since it started.
            "cluster": (cluster.view.as_json() | ({"claims": claims.as_json()} if claims is not None else {}))
            if cluster is not None
            else None,
            "node": {"implementation": "infernet-node-py", "version": __version__},
        }
    )


async def resources(request: web.Request) -> web.Response:
    model_id = request.query.get("model_id")
    return json_response(await request.app[JOB_DESK].resources(model_id))
