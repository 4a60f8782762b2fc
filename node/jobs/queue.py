"""The bounded job queue and the jobs it runs, at most `workers` at a time.

Admission is separate from enqueueing: a job takes its place in the bounds
before it is stored, and enters the queue only once it is durable, so an id is
never handed out for a job the node could lose.

When a worker is free at submission, the job can reserve it and be stored as
running in the same write that accepts it: that saves the separate "running"
write, and a crash still reads as "was running" (failed), never as a job to
run twice.

The queue also answers for its unfinished jobs and the last few it finished
(`known`): their state is the node's own, so a client polling the job it just
submitted needs no read of the store. Only what is committed is answered: a
read of a model call whose answer left before its outcome was stored waits for
that write (`outcome_pending`).

Jobs whose record lives in another store (chain deliveries, which the chain's own
tables keep and recover) go through `run_unstored`: the same bounds, the same
workers and the same pending count, but no row in the jobs table.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from node.jobs.context import job_context
from node.jobs.errors import Overloaded, StoreUnavailable, UnstorableValue
from node.jobs.model import ContainerResult, Job, JobStatus, Location, RunResult, TokenUsage
from node.jobs.ports import JobRepository, ServiceGateway
from node.jobs.runner import run_chain

log = logging.getLogger(__name__)

SHUTDOWN_REASON = "node shut down while the job was running"
# A store that cannot write (disk full...) is retried after 0.05 s, 0.1 s, ... at most 2 s apart.
STORE_RETRY_FIRST_S = 0.05
STORE_RETRY_MAX_S = 2.0

# The finished jobs kept in memory for the poll that picks up their result:
# how many, and the largest result kept (bigger ones are read from the store).
RECENT_JOBS = 512
RECENT_RESULT_BYTES = 8 * 1024


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


@dataclass(eq=False, slots=True)
class _Caller:
    """Who waits for an unstored job: where its data comes from and goes, and its outcome."""

    source: Location
    destination: Location
    outcome: asyncio.Future[RunResult]


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
        self._workers = workers
        self._max_pending = max_pending
        self._max_per_container = max_pending_per_container
        self._on_finished = on_finished
        self._observer = observer
        self._waiting: deque[Job] = deque()  # stored as queued, waiting for a worker
        self._pending = 0  # admitted and not finished: queued, running, or streaming
        self._per_container: Counter[str] = Counter()
        self._queued: Counter[str] = Counter()  # in self._waiting, by first container
        self._running: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._reserved = 0  # workers promised to jobs whose store write is under way
        self._live: dict[tuple[str, str], Job] = {}  # stored and unfinished: waiting or running
        self._recent: OrderedDict[tuple[str, str], Job] = OrderedDict()  # finished, as committed
        self._callers: dict[tuple[str, str], _Caller] = {}  # unstored jobs, admitted and not finished
        self._started = False
        self._closing = False
        self._deadline: float | None = None  # loop time by which running jobs must end
        # Several nodes on one store: whether this node surely still owns its queued jobs
        # (its lease is fresh); while not, none is started (node/jobs/claims.py).
        self._may_start: Callable[[], bool] | None = None
        self._disowned: set[tuple[str, str]] = set()  # running here, but another node took them
        # Model calls whose answer may be out while their outcome is written (model_calls.py).
        self._outcomes: dict[tuple[str, str], asyncio.Future[None]] = {}

    # -- bounds -------------------------------------------------------------

    @property
    def pending(self) -> int:
        return self._pending

    @property
    def depth(self) -> int:
        return len(self._waiting)

    @property
    def pending_unstored(self) -> int:
        """Of `pending`, the jobs run for callers with a store of their own (the chain)."""
        return len(self._callers)

    @property
    def room(self) -> int:
        """How many more jobs the global bound admits now."""
        return max(0, self._max_pending - self._pending)

    def gate(self, may_start: Callable[[], bool]) -> None:
        """Start queued jobs only while `may_start()` (the node's claim on them is fresh)."""
        self._may_start = may_start

    def kick(self) -> None:
        """Start what waits, if workers are free (after the gate opened again)."""
        self._dispatch()

    def waiting_keys(self) -> list[tuple[str, str]]:
        """The stored jobs waiting for a worker."""
        return [job.key for job in self._waiting if job.key not in self._callers]

    def drop_waiting(self, keys: set[tuple[str, str]]) -> int:
        """Take stored waiting jobs out of the line, unrun: another node owns them now."""
        kept: deque[Job] = deque()
        dropped = 0
        for job in self._waiting:
            if job.key in keys and job.key not in self._callers:
                self._unqueue(job)
                self._live.pop(job.key, None)
                self.release(job.containers[0])
                dropped += 1
            else:
                kept.append(job)
        self._waiting = kept
        return dropped

    def running_keys(self) -> list[tuple[str, str]]:
        """The stored jobs running here."""
        return [key for key in self._running if key not in self._callers]

    def disown(self, keys: set[tuple[str, str]]) -> None:
        """Stop running jobs another node owns now (it failed or reran them): what this
        node would write for them changes nothing, and it no longer answers for them."""
        for key in keys:
            task = self._running.get(key)
            if task is not None and key not in self._callers:
                self._disowned.add(key)
                task.cancel()

    def has_room(self, container: str) -> bool:
        """Whether `admit(container)` would succeed now (a hint: nothing is taken)."""
        if self._pending >= self._max_pending:
            return False
        return self._max_per_container is None or self._per_container[container] < self._max_per_container

    def snapshot(self) -> QueueState:
        """For metrics: computed when asked, so the hot path keeps no extra books."""
        return QueueState(
            depth=len(self._waiting),
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

    def release(self, container: str, status: JobStatus | None = None) -> None:
        """Give back an admitted job's place; `status` when it ended outside the workers (streams)."""
        self._pending -= 1
        self._per_container[container] -= 1
        if self._per_container[container] <= 0:
            del self._per_container[container]
        if status is not None:
            self.count_finished(container, status)

    def count_admitted(self, container: str) -> None:
        """Count a job admitted into the bounds once it is stored (one the store refuses, or that
        its caller's admission kept out, gives its place back uncounted: it never runs)."""
        self._notify("admitted", container)

    def count_finished(self, container: str, status: JobStatus) -> None:
        """Count a job that ended outside the workers (streams, model calls)."""
        self._notify("finished", container, status.value)

    def refuse(self, container: str) -> None:
        """Give back the place of a job the store refused: the bound it keeps across nodes is reached."""
        self.release(container)
        self._notify("rejected", container, "queue")

    # -- entering -------------------------------------------------------------

    def reserve(self) -> bool:
        """Promise a worker to a job about to be stored, if one is free and nobody waits.

        True: store the job as running, then `start_reserved` it (or `unreserve` if
        the write failed). False: store it as queued and `put` it.
        """
        if not self._started or self._closing or self._waiting:
            return False
        if len(self._running) + self._reserved >= self._workers:
            return False
        self._reserved += 1
        return True

    def unreserve(self) -> None:
        self._reserved -= 1
        self._dispatch()

    def start_reserved(self, job: Job) -> None:
        """Run a job stored as running on the worker reserved for it."""
        self._reserved -= 1
        self._live[job.key] = job
        # Even once closing: the store says running, so it must run (within the grace).
        self._launch(job, mark_running=False)

    def put(self, job: Job) -> None:
        """Queue an admitted job, stored as queued."""
        self._live[job.key] = job
        self._queued[job.containers[0]] += 1
        self._waiting.append(job)
        self._dispatch()

    def adopt(self, jobs: Sequence[Job]) -> None:
        """Queue jobs recovered at start, past the bounds: they were admitted once."""
        for job in jobs:
            self._pending += 1
            self._per_container[job.containers[0]] += 1
            self.put(job)

    async def run_unstored(self, job: Job, source: Location, destination: Location) -> RunResult:
        """Run a job whose record lives in another store (a chain delivery); return how it ended.

        It takes a place in the bounds (Overloaded when they are full: the caller tries again
        later), waits its turn for a worker, and counts as pending until it ends; it is never
        written to the jobs table, nor answered by `known`. Cancelling the caller cancels it.
        """
        if self._closing:
            raise Overloaded("The node is shutting down, retry later", retry_after=1.0)
        self.admit(job.containers[0])
        self.count_admitted(job.containers[0])  # its record is stored already (the chain's)
        caller = _Caller(source, destination, asyncio.get_running_loop().create_future())
        self._callers[job.key] = caller
        self._queued[job.containers[0]] += 1
        self._waiting.append(job)
        self._dispatch()
        try:
            return await caller.outcome
        except asyncio.CancelledError:
            self._abandon(job)
            raise
        finally:
            self._callers.pop(job.key, None)

    def _abandon(self, job: Job) -> None:
        """An unstored job's caller went away: stop it, or take it out of the line."""
        task = self._running.get(job.key)
        if task is not None:
            task.cancel()  # its end gives the place back (_ended)
            return
        for index, waiting in enumerate(self._waiting):
            if waiting is job:
                del self._waiting[index]
                self._unqueue(job)
                self.release(job.containers[0])
                self._dispatch()
                return

    def outcome_storing(self, key: tuple[str, str], write: asyncio.Future[None]) -> None:
        """A job's outcome is being written (its answer may be out already): reads wait for it."""
        self._outcomes[key] = write
        write.add_done_callback(lambda _: self._outcomes.pop(key, None))

    def outcome_pending(self, key: tuple[str, str]) -> asyncio.Future[None] | None:
        """The write of this job's outcome, while it is under way; None when there is none."""
        return self._outcomes.get(key)

    def known(self, key: tuple[str, str]) -> Job | None:
        """The job as stored, if it is unfinished here or among the last finished; else None (ask the store)."""
        if key in self._disowned:
            return None
        return self._live.get(key) or self._recent.get(key)

    def forget(self, key: tuple[str, str] | None = None) -> None:
        """Drop a finished job from memory (its row changed or went), or all of them (key None)."""
        if key is None:
            self._recent.clear()
        else:
            self._recent.pop(key, None)

    def _notify(self, event: str, *args: str) -> None:
        if self._observer is None:
            return
        try:
            getattr(self._observer, event)(*args)
        except Exception:  # metrics must never break a job
            log.exception("queue observer failed on %s", event)

    # -- running --------------------------------------------------------------

    def start(self) -> None:
        self._started = True
        self._dispatch()

    def _dispatch(self) -> None:
        """Start waiting jobs while workers are free; none once closing (they stay queued in the store)."""
        while (
            self._started
            and not self._closing
            and self._waiting
            and len(self._running) + self._reserved < self._workers
            and (self._may_start is None or self._may_start())
        ):
            job = self._waiting.popleft()
            self._unqueue(job)
            self._launch(job, mark_running=True)

    def _unqueue(self, job: Job) -> None:
        container = job.containers[0]
        self._queued[container] -= 1
        if self._queued[container] <= 0:
            del self._queued[container]

    def _launch(self, job: Job, mark_running: bool) -> None:
        # A task per job, so that shutdown can wait for jobs, and the context
        # (the job id on every log line) ends with it.
        task = asyncio.ensure_future(self._run(job, mark_running))
        self._running[job.key] = task
        task.add_done_callback(lambda _: self._ended(job))

    def _ended(self, job: Job) -> None:
        self._running.pop(job.key, None)
        self._live.pop(job.key, None)
        self.release(job.containers[0])
        self._dispatch()

    async def _run(self, job: Job, mark_running: bool) -> None:
        caller = self._callers.get(job.key)
        if caller is not None:
            await self._run_for(job, caller)
            return
        with job_context(job.id):
            try:
                if mark_running and not await self._durably(job, self._repository.mark_running, job.key):
                    return  # shutdown came while the store could not write: recovered at the next start
                outcome = await run_chain(self._gateway, job.containers, job.data, job.requires_proof)
            except asyncio.CancelledError:
                await asyncio.shield(self._fail(job, SHUTDOWN_REASON))
                raise
            except Exception as error:  # a bug must not stop the queue
                log.exception("job failed inside the node", extra={"job_id": job.id})
                await self._fail(job, f"internal error: {type(error).__name__}")
                return
            await self._finish(job, outcome.status, outcome.result, outcome.intermediate)

    async def _run_for(self, job: Job, caller: _Caller) -> None:
        """An unstored job: its caller gets the outcome and keeps the record."""
        with job_context(job.id):
            try:
                outcome = await run_chain(
                    self._gateway, job.containers, job.data, job.requires_proof, caller.source, caller.destination
                )
            except asyncio.CancelledError:
                caller.outcome.cancel()
                raise
            except Exception as error:  # a bug must not stop the queue, nor leave the caller waiting
                log.exception("job failed inside the node", extra={"job_id": job.id})
                failure = ContainerResult(job.containers[0], error=f"internal error: {type(error).__name__}")
                outcome = RunResult(JobStatus.FAILED, failure, [])
        self._notify("finished", job.containers[0], outcome.status.value)
        if not caller.outcome.done():
            caller.outcome.set_result(outcome)

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
        # Until the outcome is stored the job stays live here: polls see it running.
        stored = await self.store_outcome(job, status, result, intermediate)
        self._live.pop(job.key, None)
        if job.key in self._disowned:
            self._disowned.discard(job.key)
            stored = None  # the store holds what the node that took it over wrote
        if stored is not None:
            status, result, intermediate = stored
            self._remember(replace(job, status=status, result=result, intermediate=list(intermediate)))
        log_outcome(job.id, status, result)
        self._notify("finished", job.containers[0], status.value)
        if self._on_finished:
            self._on_finished(job, status)

    async def store_outcome(
        self,
        job: Job,
        status: JobStatus,
        result: ContainerResult,
        intermediate: Sequence[ContainerResult],
        usage: TokenUsage | None = None,
    ) -> tuple[JobStatus, ContainerResult, Sequence[ContainerResult]] | None:
        """Store a job's final state, whatever it takes; returns what was stored.

        A result the store can never hold (UnstorableValue) is replaced by a failure
        that says why. A store that cannot write now is retried with backoff until it
        can. Returns None only when the shutdown deadline passed first: the job is
        still `running` in the store, and the next start records it as failed.
        """
        for _ in range(3):
            try:
                if await self._durably(
                    job, self._repository.finish, job.key, status, result, intermediate, usage, job.caller
                ):
                    return status, result, intermediate
                return None
            except UnstorableValue as error:
                log.info("the job's result cannot be stored: %s", error.message, extra={"job_id": job.id})
                reason = f"the container's output cannot be stored: {error.message}"
            except Exception as error:  # a bug: never leave the job running because of it
                log.exception("could not store the job's result", extra={"job_id": job.id})
                reason = f"internal error while storing the result: {type(error).__name__}"
            # The tokens stay: the model used them, and the row is the caller's usage record.
            status, result, intermediate = JobStatus.FAILED, ContainerResult(result.container, error=reason), []
        # Not even a plain failure could be stored: the next start records the job as failed.
        log.error("gave up storing the job's outcome", extra={"job_id": job.id})
        return None

    async def _durably(self, job: Job, write: Callable[..., Awaitable[None]], *args: Any) -> bool:
        """Run a store write, retrying while the store cannot write (StoreUnavailable).

        False if the shutdown deadline passed before it could; other errors are raised.
        """
        delay = STORE_RETRY_FIRST_S
        while True:
            try:
                await write(*args)
                return True
            except StoreUnavailable as error:
                loop = asyncio.get_running_loop()
                if self._deadline is not None and loop.time() + delay > self._deadline:
                    log.error(
                        "the store still cannot write at shutdown (%s): the job stays running in the store",
                        error.cause,
                        extra={"job_id": job.id},
                    )
                    return False
                log.debug("store write failed (%s); retrying in %.2fs", error.cause, delay, extra={"job_id": job.id})
            await asyncio.sleep(delay)
            delay = min(delay * 2, STORE_RETRY_MAX_S)

    def _remember(self, job: Job) -> None:
        if job.result is not None and not fits(job.result.to_dict(), RECENT_RESULT_BYTES):
            return
        if any(not fits(step.to_dict(), RECENT_RESULT_BYTES) for step in job.intermediate):
            return
        self._recent[job.key] = job
        if len(self._recent) > RECENT_JOBS:
            self._recent.popitem(last=False)

    # -- shutdown -----------------------------------------------------------

    @property
    def grace_over(self) -> bool:
        """Whether the node is shutting down and the running jobs' grace has run out: a job
        cut now was cut by the shutdown, not by its client."""
        return self._deadline is not None and asyncio.get_running_loop().time() >= self._deadline

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
        """Let running jobs finish within the grace period; fail the late ones."""
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
        if self._waiting:
            log.info("%d queued jobs stay queued and run after the restart", len(self._waiting))


def log_outcome(job_id: str, status: JobStatus, result: ContainerResult | None, kind: str = "job") -> None:
    """Failures at INFO, with why; successes at DEBUG: at thousands of jobs a second a
    line each is noise (and CPU), and /metrics counts them (jobs_finished)."""
    if status is JobStatus.FAILED:
        reason = result.error if result is not None else None
        log.info("%s failed: %s", kind, reason, extra={"job_id": job_id})
    else:
        log.debug("%s %s", kind, status.value, extra={"job_id": job_id})


def fits(value: object, budget: int) -> bool:
    """Whether `value` (JSON-like) is at most about `budget` bytes, walking no further than that."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            budget -= len(item) + 2
        elif isinstance(item, dict):
            budget -= 2 + 4 * len(item)
            if budget < 0:
                return False
            for key, child in item.items():
                budget -= len(key) if isinstance(key, str) else 8
                stack.append(child)
        elif isinstance(item, (list, tuple)):
            budget -= 2 + len(item)
            if budget < 0:
                return False
            stack.extend(item)
        else:
            budget -= 8
        if budget < 0:
            return False
    return True
