"""Per-client, per-route rate limiting (`server.rate_limit`), answered with JSON 429.

The middleware asks a `RateLimits` port: on one node the in-process token buckets below; on a
store shared by several nodes the store's counters (node/store/server_rate_limit.py), so the
limit holds across them. `app.py` picks one and sets it under RATE_LIMITS.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from aiohttp import web
from aiohttp.typedefs import Handler

from node.api.client_ip import client_ip
from node.jobs.errors import Overloaded

# The reference does not limit status reports; metrics are for scrapers.
EXEMPT = frozenset({"/api/status", "/metrics"})
# Buckets kept at most. Beyond it the oldest are dropped: a dropped bucket only
# means a fresh burst for that client, and memory stays bounded however many
# addresses the node sees within one period.
MAX_BUCKETS = 100_000


class RateLimits(Protocol):
    async def admit(self, client: str, route: str) -> float:
        """0 if `client` may call `route` now (the call is counted), else the seconds to wait."""
        ...


RATE_LIMITS = web.AppKey("rate_limits", RateLimits)


class TokenBuckets:
    """`rate` tokens per `period` seconds, a burst of `rate`; idle buckets are forgotten."""

    def __init__(
        self,
        rate: int,
        period: float,
        clock: Callable[[], float] = time.monotonic,
        max_buckets: int = MAX_BUCKETS,
    ) -> None:
        self._rate = rate
        self._max_buckets = max_buckets
        self._period = period
        self._per_second = rate / period
        self._clock = clock
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}
        self._last_sweep = clock()

    def take(self, key: tuple[str, str]) -> float:
        """0 if allowed, else the seconds until a token is free."""
        now = self._clock()
        if now - self._last_sweep > self._period or len(self._buckets) >= self._max_buckets:
            self._sweep(now)
        # pop + insert keeps the dict in least-recently-used order for the sweep.
        tokens, stamp = self._buckets.pop(key, (float(self._rate), now))
        tokens = min(float(self._rate), tokens + (now - stamp) * self._per_second)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self._per_second

    async def admit(self, client: str, route: str) -> float:
        return self.take((client, route))

    def __len__(self) -> int:
        return len(self._buckets)

    def _sweep(self, now: float) -> None:
        self._last_sweep = now
        full = self._rate / self._per_second  # a bucket idle this long is full again: forget it
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full}
        excess = len(self._buckets) - self._max_buckets // 2
        if len(self._buckets) >= self._max_buckets and excess > 0:
            for key in list(self._buckets)[:excess]:  # least recently used first
                del self._buckets[key]


def rate_limiter() -> Callable[..., object]:
    """The middleware; it asks the app's RATE_LIMITS, set when the store is opened."""

    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else request.path
        if route not in EXEMPT:
            wait = await request.app[RATE_LIMITS].admit(client_ip(request), route)
            if wait > 0:
                raise Overloaded("Too many requests", retry_after=wait, params={"route": route})
        return await handler(request)

    return limit
