"""The per-IP rate limit (`server.rate_limit`) kept in a SQL server store, shared by its nodes.

A fixed window of `period` seconds per (client IP, route): one atomic `INSERT … ON CONFLICT DO
UPDATE … WHERE under the limit RETURNING` per request takes a request from the window's count,
or returns nothing when the window is full, whichever node the client reaches. Like any fixed
window, a client may make up to twice the rate across the boundary of two windows; within one
window the limit is exact. Windows that ended are pruned. While the store cannot be reached,
requests pass (a warning says so).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import delete, text
from sqlalchemy.ext.asyncio import AsyncEngine

from node.jobs.errors import StoreUnavailable
from node.store.faults import read_failed
from node.store.limit_tables import rate_windows

log = logging.getLogger(__name__)

WARN_EVERY_S = 10.0
_TAKE = text(
    "INSERT INTO rate_windows (client_ip, route, window_index, requests) VALUES (:client_ip, :route, :window, 1) "
    "ON CONFLICT (client_ip, route, window_index) DO UPDATE SET requests = rate_windows.requests + 1 "
    "WHERE rate_windows.requests < :rate RETURNING requests"
)


class ServerRateLimit:
    def __init__(self, engine: AsyncEngine, rate: int, period: float, clock: Callable[[], float] = time.time) -> None:
        if rate < 1:
            raise ValueError("a rate limit admits at least one request per period")
        # One statement, its own transaction: no BEGIN/COMMIT round trips.
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        self._rate = rate
        self._period = period
        self._clock = clock
        self._warned_at = float("-inf")

    @property
    def period(self) -> float:
        return self._period

    async def admit(self, client: str, route: str) -> float:
        """0 if the request is allowed, else the seconds until the client's window for `route` ends."""
        now = self._clock()
        window = int(now // self._period)
        params = {"client_ip": client, "route": route, "window": window, "rate": self._rate}
        try:
            async with self._engine.connect() as connection:
                taken = (await connection.execute(_TAKE, params)).first()
        except Exception as error:
            failure = read_failed(error)
            if not isinstance(failure, StoreUnavailable):
                raise failure from error
            # The store is down: let the request through (it answers 503 itself if it needs the
            # store; /health reports it) rather than refuse every route for want of a counter.
            if now - self._warned_at > WARN_EVERY_S:
                self._warned_at = now
                log.warning("the rate limit's store cannot be reached (%s): requests pass unlimited", failure.cause)
            return 0.0
        if taken is not None:
            return 0.0
        return max((window + 1) * self._period - now, 0.001)

    async def prune(self) -> int:
        """Delete the windows that ended; returns how many."""
        current = int(self._clock() // self._period)
        async with self._engine.connect() as connection:
            result = await connection.execute(delete(rate_windows).where(rate_windows.c.window_index < current))
        return result.rowcount or 0
