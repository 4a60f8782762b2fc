"""The bounded job queue and the pool of workers that drains it.

Admission is separate from enqueueing: a job takes its place in the bounds
before it is stored, and enters the queue only once it is durable, so an id is
never handed out for a job the node could lose.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence

from node.jobs.errors import Overloaded
from node.jobs.model import ContainerResult, Job, JobStatus
from node.jobs.ports import JobRepository, ServiceGateway
from node.jobs.runner import run_chain

log = logging.getLogger(__name__)

SHUTDOWN_REASON = "node shut down while the job was running"


class JobQueue:
    def __init__(
        self,
        repository: JobRepository,
        gateway: ServiceGateway,
        workers: int,
        max_pending: int,
        max_pending_per_container: int | None = None,
        on_finished: Callable[[Job, JobStatus], None] | None = None,
    ) -> None:
        self._repository = repository
        self._gateway = gateway
        self._worker_count = workers
        self._max_pending = max_pending
        self._max_per_container = max_pending_per_container
        self._on_finished = on_finished
        self._queue: asyncio.Queue[Job] = asyncio.Queue()
        self._pending = 0  # admitted and not finished: queued, running, or streaming
        self._per_container: Counter[str] = Counter()
        self._running: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._workers: list[asyncio.Task[None]] = []
        self._closing = False

    # -- bounds -------------------------------------------------------------

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def admit(self, container: str) -> None:
        """Take a place for one job whose first container is `container`, or raise Overloaded."""
        if self._pending >= self._max_pending:
            raise Overloaded(
                "Too many jobs queued, retry later",
                retry_after=1.0,
                params={"limit": self._max_pending},
            )
        if self._max_per_container is not None and self._per_container[container] >= self._max_per_container:
            raise Overloaded(
                "Too many jobs queued for this container, retry later",
                retry_after=1.0,
                params={"container": container, "limit": self._max_per_container},
            )
        self._pending += 1
        self._per_container[container] += 1

    def release(self, container: str) -> None:
        self._pending -= 1
        self._per_container[container] -= 1
        if self._per_container[container] <= 0:
            del self._per_container[container]

    def adopt(self, jobs: Sequence[Job]) -> None:
        """Queue jobs recovered at start, past the bounds: they were admitted once."""
        for job in jobs:
            self._pending += 1
            self._per_container[job.containers[0]] += 1
            self._queue.put_nowait(job)

    def put(self, job: Job) -> None:
        """Queue an admitted, stored job."""
        self._queue.put_nowait(job)

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
                # Leave it queued in the store: it runs after the restart.
                self._queue.task_done()
                continue
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
        if self._on_finished:
            self._on_finished(job, status)

    async def stop(self, grace_seconds: float) -> None:
        """Stop taking jobs from the queue; let running ones finish within the grace period."""
        self._closing = True
        running = list(self._running.values())
        if running:
            log.info("waiting up to %.1fs for %d running jobs", grace_seconds, len(running))
            late = set(running)
            if grace_seconds > 0:
                _, late = await asyncio.wait(running, timeout=grace_seconds)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
