"""Several nodes on one store: this node's claim on its pending jobs, and the jobs of dead nodes.

Every pending job in a shared store has an owner (the node that accepted or claimed it). It
is the owner's while the owner's heartbeat (the lease `node:<id>`, node/cluster.py) is live:
one renewal a beat per node, whatever the backlog. A node whose heartbeat ran out (or was
released by a clean stop) is gone: on each beat the others claim its jobs (the store locks
them with FOR UPDATE SKIP LOCKED, so each is claimed once). Its queued jobs run on the
claimer; its running ones end failed ("node … died while the job was running"), or run again
when every container of the chain is declared safe to retry (`containers[].retry_interrupted`).

A node only starts a queued job while its heartbeat is surely live (measured on its own
monotonic clock from the last renewal that worked): a node paused or cut off from the
store past its lease stops starting jobs, and when its heartbeat is taken again it first
drops the queued jobs another node took meanwhile, before starting any. Its late writes to
a job it lost change nothing (the store's writes are conditional on the owner).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from node.jobs.model import Job
from node.jobs.ports import Heartbeat, JobClaims
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
        heartbeat: Heartbeat,
        queue: JobQueue,
        renew_seconds: float,
        retryable: frozenset[str],
    ) -> None:
        if renew_seconds <= 0:
            raise ValueError("claims need a positive beat")
        self._claims = claims
        self._heartbeat = heartbeat
        self._queue = queue
        self._renew = renew_seconds
        self._retryable = retryable
        self._checked = -1  # the heartbeat's `gained` whose lost jobs were dropped (none yet)
        self._task: asyncio.Task[None] | None = None
        self.counts = ClaimCounts()
        queue.gate(self.may_start)

    @property
    def node_id(self) -> str:
        return self._claims.owner

    def may_start(self) -> bool:
        # Half a beat of margin: the write that marks the job running lands before the heartbeat
        # runs out. And nothing starts after a lapse until what others took is dropped.
        return self._heartbeat.gained == self._checked and self._heartbeat.valid_for() > self._renew / 2

    async def recover(self, restart_reason: str) -> None:
        """At start: take the jobs this node's id left behind (a restart) and those of dead nodes."""
        self._checked = self._heartbeat.gained  # nothing queued here yet: nothing to drop
        claimed = await self._claims.claim(self._queue.room, self._retryable, restart_reason)
        self._adopt(claimed.queued, claimed.failed, claimed.rerun)

    async def beat(self) -> None:
        """Drop what others took if the heartbeat ran out, then claim what dead nodes left (one step)."""
        if self._heartbeat.valid_for() <= 0:
            return  # others may count this node dead: it claims nothing until its heartbeat is back
        gained = self._heartbeat.gained
        if gained != self._checked:
            await self._drop_lost()
            self._checked = gained
        self._queue.kick()
        room = self._queue.room
        if room:
            claimed = await self._claims.claim(room, self._retryable)
            self._adopt(claimed.queued, claimed.failed, claimed.rerun)

    async def _drop_lost(self) -> None:
        """Our heartbeat ran out for a while: other nodes may have claimed some of our jobs meanwhile."""
        waiting, running = self._queue.waiting_keys(), self._queue.running_keys()
        if not waiting and not running:
            return
        kept = await self._claims.owned([*waiting, *running])
        lost_waiting = set(waiting) - kept
        lost_running = set(running) - kept
        if lost_waiting or lost_running:
            log.warning(
                "this node's heartbeat ran out: other nodes took %d of its queued and %d of its running jobs",
                len(lost_waiting),
                len(lost_running),
            )
            self._queue.drop_waiting(lost_waiting)
            self._queue.disown(lost_running)

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
            except Exception:  # a bug must not stop the claims
                log.exception("job claims: beat failed")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="job-claims")

    async def close(self) -> None:
        """Stop claiming; the queued jobs left here pass to the other nodes at once (no wait for the heartbeat)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            released = await self._claims.release_queued()
        except Exception as error:
            log.warning(
                "could not hand the queued jobs over (%s: %s); they pass on when the heartbeat runs out",
                type(error).__name__,
                error,
            )
            return
        if released:
            log.info("%d queued jobs handed over to the other nodes", released)
