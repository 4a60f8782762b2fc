"""Leases: a named right that one holder has until it expires, kept in the shared store.

Several nodes on one store elect a leader for a task (the chain sender of a wallet) by
racing for the same lease; a node's heartbeat is a lease only it ever takes. The store
does the one thing that must be atomic: take the lease if it is free or expired, or
renew it if the caller already holds it (`LeaseStore.acquire`). Everything else, the
renewal loop and knowing locally how long the lease is still ours, is here, free of SQL.

Expiry times are wall-clock seconds written by the nodes: their clocks must agree (NTP)
to well under the lease time. How long a lease is still ours is measured on the local
monotonic clock from the start of the last successful acquire, so a node paused past the
lease time (GC, SIGSTOP, a stalled disk) knows it lost the lease when it wakes up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    name: str
    holder: str
    acquired_at: float  # when this holder took it (wall clock)
    expires_at: float


class LeaseStore(Protocol):
    async def acquire(self, name: str, holder: str, ttl: float) -> bool:
        """Take `name` for `ttl` seconds if it is free, expired or already held by `holder`
        (then it is renewed), in one atomic step. True when `holder` holds it afterwards."""
        ...

    async def release(self, name: str, holder: str) -> None:
        """Give `name` up now, if `holder` holds it (a clean shutdown: no wait for expiry)."""
        ...

    async def live(self, prefix: str) -> list[LeaseInfo]:
        """The unexpired leases whose names start with `prefix`."""
        ...


class Lease:
    """One lease this process wants to hold, renewed every `renew_every` seconds.

    `on_change(held)` is awaited on every gain and loss; it runs inside the renewal loop,
    so while it runs the lease is not renewed: keep it shorter than `ttl - renew_every`.
    """

    def __init__(
        self,
        store: LeaseStore,
        name: str,
        holder: str,
        ttl: float,
        renew_every: float,
        on_change: Callable[[bool], Awaitable[None]] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < renew_every < ttl:
            raise ValueError("a lease must be renewed more often than it expires")
        self._store = store
        self.name = name
        self.holder = holder
        self.ttl = ttl
        self.renew_every = renew_every
        self._on_change = on_change
        self._monotonic = monotonic
        self._valid_until = 0.0  # local monotonic time the lease is surely ours until
        # Times the lease was taken while not surely ours: first taken, or held again after it
        # ran out, when another node may have acted as if this holder were gone.
        self.gained = 0
        self._announced = False  # what on_change was last told
        self._lock = asyncio.Lock()

    def valid_for(self) -> float:
        """Seconds the lease is surely still ours (0 when it is not)."""
        return max(0.0, self._valid_until - self._monotonic())

    @property
    def held(self) -> bool:
        return self.valid_for() > 0

    async def renew(self) -> bool:
        """One attempt to take or renew the lease; True when held afterwards. Never raises
        for a store error: the lease then stays ours until it runs out locally."""
        async with self._lock:
            started = self._monotonic()
            try:
                if await self._store.acquire(self.name, self.holder, self.ttl):
                    # Judged on the answer's arrival: a renewal that lands after the lease ran out
                    # may have let another node see it expired while it was in flight.
                    if self._valid_until <= self._monotonic():
                        self.gained += 1
                    self._valid_until = started + self.ttl
                else:
                    self._valid_until = 0.0
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("lease %s: the store did not answer (%s: %s)", self.name, type(error).__name__, error)
            return self.held

    async def confirm(self, margin: float) -> bool:
        """Fencing before an act only the holder may do: renew now, and True only if the
        lease is ours for at least `margin` more seconds."""
        await self.renew()
        return self.valid_for() >= margin

    async def step(self) -> bool:
        """Renew once and announce a gain or a loss; returns whether the lease is held."""
        held = await self.renew()
        if held != self._announced:
            self._announced = held
            if self._on_change is not None:
                await self._on_change(held)
        return held

    async def run_forever(self) -> None:
        while True:
            await self.step()
            await asyncio.sleep(self.renew_every)

    async def release(self) -> None:
        async with self._lock:
            self._valid_until = 0.0
            try:
                await self._store.release(self.name, self.holder)
            except Exception as error:
                log.warning("lease %s: could not release (%s: %s)", self.name, type(error).__name__, error)
