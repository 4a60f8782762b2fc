"""Several nodes on one store: this node's claim on its pending jobs, and the jobs of dead nodes.

Every pending job in a shared store has an owner (the node that accepted or claimed it) and a
lease (`lease_until`), which the owner renews on every beat while it lives. A node whose
leases ran out is dead: on each beat the others claim its jobs (the store locks them with
FOR UPDATE SKIP LOCKED, so each is claimed once). Its queued jobs run on the claimer; its
running ones end failed ("node … died while the job was running"), or run again when every
container of the chain is declared safe to retry (`containers[].retry_interrupted`).

A node only starts a queued job while its lease is surely fresh (measured on its own
monotonic clock from the last renewal that worked): a node paused or cut off from the
store past its lease stops starting jobs, and when it gets through again it first drops
the queued jobs another node took meanwhile. Its late writes to a job it lost change
nothing (the store's writes are conditional on the owner).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from node.jobs.model import Job
from node.jobs.ports import JobClaims
from node.jobs.queue import JobQueue

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ClaimCounts:
    """What this node took over since it started, from dead nodes (and, at start, from its own id)."""

    queued: int = 0  # queued jobs taken over, run here
    rerun: int = 0  # interrupted jobs safe to retry, run again here
    failed: int = 0  # interrupted jobs recorded as failed (died / restarted)

    def as_json(self) -> dict[str, int]:
        return {"queued": self.queued, "rerun": self.rerun, "failed": self.failed}


class ClaimKeeper:
    def __init__(
        self,
        claims: JobClaims,
        queue: JobQueue,
        lease_seconds: float,
        renew_seconds: float,
        retryable: frozenset[str],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < renew_seconds < lease_seconds:
            raise ValueError("a lease must be renewed more often than it expires")
        self._claims = claims
        self._queue = queue
        self._lease = lease_seconds
        self._renew = renew_seconds
        self._retryable = retryable
        self._monotonic = monotonic
        self._valid_until = 0.0
        self._task: asyncio.Task[None] | None = None
        self.counts = ClaimCounts()
        queue.gate(self.may_start)

    @property
    def node_id(self) -> str:
        assert self._claims.owner is not None
        return self._claims.owner

    def may_start(self) -> bool:
        # Half a beat of margin: the write that marks the job running lands before the lease runs out.
        return self._monotonic() + self._renew / 2 < self._valid_until

    async def recover(self, restart_reason: str) -> None:
        """At start: take the jobs this node's id left behind (a restart) and those of dead nodes."""
        await self._renew_leases()
        claimed = await self._claims.claim(self._queue.room, self._retryable, restart_reason)
        self._adopt(claimed.queued, claimed.failed, claimed.rerun)

    async def beat(self) -> None:
        """Renew this node's leases, then claim what dead nodes left (one step of the loop)."""
        lapsed = self._valid_until <= self._monotonic()
        if not await self._renew_leases():
            return
        if lapsed:
            await self._drop_lost()
        self._queue.kick()
        room = self._queue.room
        if room:
            claimed = await self._claims.claim(room, self._retryable)
            self._adopt(claimed.queued, claimed.failed, claimed.rerun)

    async def _drop_lost(self) -> None:
        """Our lease ran out for a while: other nodes may have claimed some of our jobs meanwhile."""
        waiting, running = self._queue.waiting_keys(), self._queue.running_keys()
        if not waiting and not running:
            return
        kept = await self._claims.owned([*waiting, *running])
        lost_waiting = set(waiting) - kept
        lost_running = set(running) - kept
        if lost_waiting or lost_running:
            log.warning(
                "this node's lease ran out: other nodes took %d of its queued and %d of its running jobs",
                len(lost_waiting),
                len(lost_running),
            )
            self._queue.drop_waiting(lost_waiting)
            self._queue.disown(lost_running)

    async def _renew_leases(self) -> bool:
        started = self._monotonic()
        try:
            await self._claims.renew()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the store will answer again; meanwhile the lease runs down
            log.warning("could not renew the job leases (%s: %s)", type(error).__name__, error)
            return False
        self._valid_until = started + self._lease
        return True

    def _adopt(self, queued: list[Job], failed: int, rerun: int) -> None:
        self.counts.queued += len(queued) - rerun
        self.counts.rerun += rerun
        self.counts.failed += failed
        if failed:
            log.warning("%d jobs were running on a node that died or restarted: marked failed", failed)
        if rerun:
            log.warning("%d interrupted jobs are safe to retry: running them again", rerun)
        if queued:
            log.info("claimed %d queued jobs", len(queued))
            self._queue.adopt(queued)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._renew)
            try:
                await self.beat()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not stop the heartbeat
                log.exception("job claims: beat failed")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="job-claims")

    async def close(self) -> None:
        """Stop renewing; the queued jobs left here pass to the other nodes at once (no wait for the lease)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            released = await self._claims.release_queued()
        except Exception as error:
            log.warning(
                "could not hand the queued jobs over (%s: %s); they pass on when the lease runs out",
                type(error).__name__,
                error,
            )
            return
        if released:
            log.info("%d queued jobs handed over to the other nodes", released)
