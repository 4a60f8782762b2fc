"""GET /metrics, and the middleware that counts every HTTP request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Handler

from node.metrics import NodeMetrics

METRICS = web.AppKey("metrics", NodeMetrics)

# Paths that match no route are folded into one label: the path is client input.
UNMATCHED = "unmatched"
# nginx's convention for "the client closed the connection before the answer".
CLIENT_CLOSED = 499


def route_label(request: web.Request) -> str:
    """The route template (/api/jobs), never the raw path (ids, garbage)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED


def http_metrics(metrics: NodeMetrics) -> Callable[..., object]:
    """The outermost middleware, so it sees the status the client really gets
    (after the JSON error middleware turned exceptions into answers)."""

    @web.middleware
    async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
        start = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as error:  # redirects; errors are already JSON answers
            status = error.status
            raise
        except asyncio.CancelledError:
            status = CLIENT_CLOSED
            raise
        finally:
            # Counted once the answer is on its way: off the request's own path.
            asyncio.get_running_loop().call_soon(
                metrics.http_request, route_label(request), request.method, status, time.perf_counter() - start
            )

    return observe


async def metrics_endpoint(request: web.Request) -> web.Response:
    body, content_type = request.app[METRICS].render(request.headers.get("Accept"))
    response = web.Response(body=body)
    response.headers["Content-Type"] = content_type
    return response
