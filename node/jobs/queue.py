"""The bounded job queue and the pool of workers that drains it.

Admission is separate from enqueueing: a job takes its place in the bounds
before it is stored, and enters the queue only once it is durable, so an id is
never handed out for a job the node could lose.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from node.jobs.errors import Overloaded
from node.jobs.model import ContainerResult, Job, JobStatus
from node.jobs.ports import JobRepository, ServiceGateway
from node.jobs.runner import run_chain
from node.logs import job_context

log = logging.getLogger(__name__)

SHUTDOWN_REASON = "node shut down while the job was running"


class QueueObserver(Protocol):
    """Told about admissions and outcomes (metrics); must be cheap and never raise."""

    def admitted(self, container: str) -> None: ...

    def rejected(self, container: str, bound: str) -> None:
        """bound: "queue" (the global one) or "container"."""
        ...

    def finished(self, container: str, status: str) -> None: ...


@dataclass(frozen=True, slots=True)
class QueueState:
    depth: int  # waiting for a worker
    pending: int  # admitted and not finished
    capacity: int
    # first container -> (queued, running). Running includes streamed jobs and
    # the moment between admission and enqueueing (the store write).
    by_container: Mapping[str, tuple[int, int]]


class JobQueue:
    def __init__(
        self,
        repository: JobRepository,
        gateway: ServiceGateway,
        workers: int,
        max_pending: int,
        max_pending_per_container: int | None = None,
        on_finished: Callable[[Job, JobStatus], None] | None = None,
        observer: QueueObserver | None = None,
    ) -> None:
        self._repository = repository
        self._gateway = gateway
        self._worker_count = workers
        self._max_pending = max_pending
        self._max_per_container = max_pending_per_container
        self._on_finished = on_finished
        self._observer = observer
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._pending = 0  # admitted and not finished: queued, running, or streaming
        self._per_container: Counter[str] = Counter()
        self._queued: Counter[str] = Counter()  # in self._queue, by first container
        self._running: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._closing = False
        self._deadline: float | None = None  # loop time by which running jobs must end
        self._left_queued = 0  # taken off the queue while closing; still queued in the store

    # -- bounds -------------------------------------------------------------

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def snapshot(self) -> QueueState:
        """For metrics: computed when asked, so the hot path keeps no extra books."""
        return QueueState(
            depth=self._queue.qsize(),
            pending=self._pending,
            capacity=self._max_pending,
            by_container={
                container: (self._queued[container], count - self._queued[container])
                for container, count in self._per_container.items()
            },
        )

    def admit(self, container: str) -> None:
        """Take a place for one job whose first container is `container`, or raise Overloaded."""
        if self._pending >= self._max_pending:
            self._notify("rejected", container, "queue")
            raise Overloaded(
                "Too many jobs queued, retry later",
                retry_after=1.0,
                params={"limit": self._max_pending},
            )
        if self._max_per_container is not None and self._per_container[container] >= self._max_per_container:
            self._notify("rejected", container, "container")
            raise Overloaded(
                "Too many jobs queued for this container, retry later",
                retry_after=1.0,
                params={"container": container, "limit": self._max_per_container},
            )
        self._pending += 1
        self._per_container[container] += 1
        self._notify("admitted", container)

    def release(self, container: str, status: JobStatus | None = None) -> None:
        """Give back an admitted job's place; `status` when it ended outside the workers (streams)."""
        self._pending -= 1
        self._per_container[container] -= 1
        if self._per_container[container] <= 0:
            del self._per_container[container]
        if status is not None:
            self._notify("finished", container, status.value)

    def adopt(self, jobs: Sequence[Job]) -> None:
        """Queue jobs recovered at start, past the bounds: they were admitted once."""
        for job in jobs:
            self._pending += 1
            self._per_container[job.containers[0]] += 1
            self._enqueue(job)

    def put(self, job: Job) -> None:
        """Queue an admitted, stored job."""
        self._enqueue(job)

    def _enqueue(self, job: Job) -> None:
        self._queued[job.containers[0]] += 1
        self._queue.put_nowait(job)

    def _notify(self, event: str, *args: str) -> None:
        if self._observer is None:
            return
        try:
            getattr(self._observer, event)(*args)
        except Exception:  # metrics must never break a job
            log.exception("queue observer failed on %s", event)

    # -- workers ------------------------------------------------------------

    def start(self) -> None:
        self._workers = [
            asyncio.create_task(self._work(), name=f"job-worker-{index}")
            for index in range(self._worker_count)
        ]

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            if self._closing:
                # Leave it queued in the store (and in the metrics): it runs after the restart.
                self._left_queued += 1
                self._queue.task_done()
                continue
            container = job.containers[0]
            self._queued[container] -= 1
            if self._queued[container] <= 0:
                del self._queued[container]
            # A task per job, so that shutdown can wait for jobs, not for workers.
            task = asyncio.ensure_future(self._run(job))
            self._running[job.key] = task
            try:
                await task
            finally:
                self._running.pop(job.key, None)
                self.release(job.containers[0])
                self._queue.task_done()

    async def _run(self, job: Job) -> None:
        # Its own task, so the context (job id on every log line) ends with it.
        with job_context(job.id):
            try:
                await self._repository.mark_running(job.key)
                outcome = await run_chain(self._gateway, job.containers, job.data, job.requires_proof)
            except asyncio.CancelledError:
                await asyncio.shield(self._fail(job, SHUTDOWN_REASON))
                raise
            except Exception as error:  # a bug or a store fault must not kill the worker
                log.exception("job failed inside the node", extra={"job_id": job.id})
                await self._fail(job, f"internal error: {type(error).__name__}")
                return
            await self._finish(job, outcome.status, outcome.result, outcome.intermediate)

    async def _fail(self, job: Job, reason: str) -> None:
        container = job.containers[0]
        await self._finish(job, JobStatus.FAILED, ContainerResult(container, error=reason), [])

    async def _finish(
        self,
        job: Job,
        status: JobStatus,
        result: ContainerResult,
        intermediate: Sequence[ContainerResult],
    ) -> None:
        for attempt in range(3):
            try:
                await self._repository.finish(job.key, status, result, intermediate)
                break
            except Exception:
                log.exception("could not store the job's result (attempt %d)", attempt + 1,
                              extra={"job_id": job.id})
                await asyncio.sleep(0.2 * (attempt + 1))
        log.info("job %s", status.value, extra={"job_id": job.id})
        self._notify("finished", job.containers[0], status.value)
        if self._on_finished:
            self._on_finished(job, status)

    # -- shutdown -----------------------------------------------------------

    def close(self, grace_seconds: float) -> None:
        """Start no more jobs, and start the grace period of the running ones.

        Called as soon as the node begins to shut down (before the HTTP server
        drains its requests), so the grace counts from the signal. Queued jobs
        stay queued in the store and run after the restart. Idempotent.
        """
        if self._deadline is None:
            self._closing = True
            self._deadline = asyncio.get_running_loop().time() + grace_seconds

    async def stop(self, grace_seconds: float) -> None:
        """Let running jobs finish within the grace period; fail the late ones; stop the workers."""
        self.close(grace_seconds)
        assert self._deadline is not None
        remaining = max(0.0, self._deadline - asyncio.get_running_loop().time())
        running = list(self._running.values())
        if running:
            log.info("waiting up to %.1fs for %d running jobs", remaining, len(running))
            late = set(running)
            if remaining > 0:
                _, late = await asyncio.wait(running, timeout=remaining)
            for task in late:
                task.cancel()
            if late:
                log.warning("%d jobs still running after the grace period: recorded as failed", len(late))
                await asyncio.wait(late)
        left = self._left_queued + self._queue.qsize()
        if left:
            log.info("%d queued jobs stay queued and run after the restart", left)
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
