"""The job desk: what every entrypoint asks of the node about jobs.

(Not "service": in this project a service is an inference service in a container.)

Submitting, listing, reading results, recording statuses, streaming and
recovering after a restart all live here, free of HTTP and SQL.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from node.jobs.errors import InvalidRequest, JobError, Overloaded, Rejected
from node.jobs.guardian import Guardian
from node.jobs.model import ContainerResult, Job, JobOrigin, JobStatus, Location, RunResult, new_job_id
from node.jobs.model_calls import ModelCall
from node.jobs.ports import Gate, JobRepository, ServiceGateway
from node.jobs.queue import JobQueue, log_outcome

log = logging.getLogger(__name__)

RESTART_REASON = "node restarted while the job was running"
# The client of jobs run for the chain: never a peer address, so no REST client sees them.
CHAIN_CLIENT = "chain"


@dataclass(frozen=True, slots=True)
class JobRequest:
    containers: list[str]
    data: Any
    requires_proof: bool = False


@dataclass(frozen=True, slots=True)
class DelegatedRequest:
    """A delegated subscription as parsed from the wire; the chain module judges it."""

    subscription: dict[str, Any]
    signature: dict[str, Any]
    data: Any


# What submit_batch answers for each item: the new job's id, None for an accepted
# delegated subscription (it has no id until it is on chain), or why it was refused.
BatchAnswer = str | None | JobError


class DelegatedSubscriptions(Protocol):
    async def accept(self, request: DelegatedRequest) -> None:
        """Check and store a delegated subscription, or raise a JobError."""
        ...


class JobDesk:
    """Admits jobs (guardian, queue bounds), stores them, queues them, and answers for them."""

    def __init__(
        self,
        repository: JobRepository,
        gateway: ServiceGateway,
        guardian: Guardian,
        queue: JobQueue,
        delegated: DelegatedSubscriptions | None = None,
        clock: Callable[[], float] = time.time,
        max_chain_length: int | None = None,
    ) -> None:
        self._repository = repository
        self._max_chain_length = max_chain_length
        self._gateway = gateway
        self._guardian = guardian
        self._queue = queue
        self._delegated = delegated
        self._clock = clock

    @property
    def grace_over(self) -> bool:
        """Whether the node is stopping and its running jobs' grace has run out."""
        return self._queue.grace_over

    @property
    def pending_offchain(self) -> int:
        return self._queue.pending - self._queue.pending_unstored

    def has_room(self, container: str) -> bool:
        """Whether a job for `container` would be admitted now (a hint for callers that can wait)."""
        return self._queue.has_room(container)

    async def run_for_chain(
        self, containers: Sequence[str], data: Any, requires_proof: bool, source: Location, destination: Location
    ) -> RunResult:
        """Run a chain delivery's containers as a job: in the queue's bounds and workers, counted as
        pending, not stored (the chain keeps its deliveries). Raises Overloaded when the queue is full."""
        now = self._clock()
        job = Job(
            id=new_job_id(),
            client_ip=CHAIN_CLIENT,
            containers=list(containers),
            data=data,
            requires_proof=requires_proof,
            origin=JobOrigin.CHAIN,
            status=JobStatus.QUEUED,
            created_at=now,
            updated_at=now,
        )
        return await self._queue.run_unstored(job, source, destination)

    @property
    def gateway(self) -> ServiceGateway:
        """The service gateway (streams relay through it)."""
        return self._gateway

    def attach_delegated(self, delegated: DelegatedSubscriptions) -> None:
        """Accept delegated subscriptions from now on (the chain module calls this once it runs)."""
        self._delegated = delegated

    # -- lifecycle ----------------------------------------------------------

    async def recover(self) -> None:
        """Pick up after a stop: queued jobs run again, interrupted ones fail."""
        queued, failed = await self._repository.recover(RESTART_REASON)
        if failed:
            log.warning("%d jobs were running when the node stopped; marked failed", failed)
        if queued:
            log.info("resuming %d queued jobs", len(queued))
        self._queue.adopt(queued)

    # -- submitting ---------------------------------------------------------

    def _check(self, request: JobRequest, client_ip: str) -> None:
        """Refuse what this client may not run: a chain over the length limit, then the guardian's rules."""
        limit = self._max_chain_length
        if limit is not None and len(request.containers) > limit:
            # Before the guardian: one request must not cost thousands of checks, let alone calls.
            raise InvalidRequest(
                f"Too many containers in the chain: at most {limit} (jobs.max_chain_length)",
                {"limit": limit, "containers": len(request.containers)},
            )
        self._guardian.check_offchain(request.containers, request.requires_proof, client_ip)

    def _new_job(self, client_ip: str, request: JobRequest, origin: JobOrigin, status: JobStatus) -> Job:
        now = self._clock()
        return Job(
            id=new_job_id(),
            client_ip=client_ip,
            containers=list(request.containers),
            data=request.data,
            requires_proof=request.requires_proof,
            origin=origin,
            status=status,
            created_at=now,
            updated_at=now,
        )

    async def submit(self, client_ip: str, request: JobRequest) -> str:
        self._check(request, client_ip)
        self._queue.admit(request.containers[0])
        entry = self._admitted_job(client_ip, request)
        await self._store_and_start([entry])
        return entry[1].id

    def _admitted_job(self, client_ip: str, request: JobRequest) -> tuple[bool, Job]:
        """A new job for an admitted request, running at once if a worker is free (see queue.py)."""
        reserved = self._queue.reserve()
        status = JobStatus.RUNNING if reserved else JobStatus.QUEUED
        return reserved, self._new_job(client_ip, request, JobOrigin.OFFCHAIN, status)

    async def _store_and_start(self, entries: Sequence[tuple[bool, Job]]) -> int:
        """Store admitted jobs in one write, then run or queue them; on failure give back their places.

        Returns how many were stored: the first ones, all unless the store's own bound (several
        nodes on one store) refused the others, whose places are given back too.
        """
        stored = len(entries)
        try:
            if len(entries) == 1:
                await self._repository.add(entries[0][1])
            elif entries:
                stored = await self._repository.add_many([job for _, job in entries])
        except BaseException as error:
            self._give_back(entries, refused=isinstance(error, Overloaded))
            raise
        self._give_back(entries[stored:], refused=True)
        for reserved, job in entries[:stored]:
            self._queue.count_admitted(job.containers[0])
            if reserved:
                self._queue.start_reserved(job)
            else:
                self._queue.put(job)
        if any(reserved for reserved, _ in entries[:stored]):
            # One turn of the loop lets started jobs send their requests to the service
            # before the answer is written: the service works meanwhile.
            await asyncio.sleep(0)
        return stored

    def _give_back(self, entries: Sequence[tuple[bool, Job]], refused: bool) -> None:
        """Give back the places of jobs not stored; `refused`: by the store's bound (counted as such)."""
        for reserved, job in entries:
            if reserved:
                self._queue.unreserve()
            if refused:
                self._queue.refuse(job.containers[0])
            else:
                self._queue.release(job.containers[0])

    async def submit_delegated(self, request: DelegatedRequest) -> None:
        if self._delegated is None:
            raise Rejected("Chain not enabled", {})
        await self._delegated.accept(request)

    async def submit_batch(self, client_ip: str, items: Sequence[JobRequest | DelegatedRequest]) -> list[BatchAnswer]:
        """One answer per item, in order; accepted jobs are stored in one write."""
        answers: list[BatchAnswer] = []
        accepted: list[tuple[bool, Job]] = []
        for item in items:
            try:
                if isinstance(item, DelegatedRequest):
                    await self.submit_delegated(item)
                    answers.append(None)
                    continue
                self._check(item, client_ip)
                self._queue.admit(item.containers[0])
            except JobError as error:
                answers.append(error)
                continue
            entry = self._admitted_job(client_ip, item)
            accepted.append(entry)
            answers.append(entry[1].id)
        try:
            stored = await self._store_and_start(accepted)
        except Overloaded:  # a lone job refused by the store's bound
            stored = 0
        if stored < len(accepted):  # the store's bound (several nodes) took only the first ones
            refused = {job.id for _, job in accepted[stored:]}
            full = Overloaded("Too many jobs queued, retry later", retry_after=1.0)
            answers = [full if isinstance(answer, str) and answer in refused else answer for answer in answers]
        return answers

    # -- reading ------------------------------------------------------------

    async def results(self, client_ip: str, ids: Sequence[str]) -> list[Job]:
        """The caller's jobs with these ids, in request order, unknown ids left out."""
        wanted = [job_id for job_id in dict.fromkeys(ids) if job_id]
        if not wanted:
            return []
        # A model call's answer can reach its caller before its outcome is stored: a read
        # that follows it sees the outcome.
        writes = [write for job_id in wanted if (write := self._queue.outcome_pending((client_ip, job_id)))]
        if writes:
            await asyncio.wait(writes)
        # Unfinished jobs of this node answer from memory; the store has the rest.
        found = {job_id: job for job_id in wanted if (job := self._queue.known((client_ip, job_id))) is not None}
        stored = [job_id for job_id in wanted if job_id not in found]
        if stored:
            found.update((job.id, job) for job in await self._repository.get_many(client_ip, stored))
        # Request order, unknown ids dropped (the reference reorders; clients read [0]).
        return [found[job_id] for job_id in wanted if job_id in found]

    async def ids(self, client_ip: str, pending: bool | None) -> list[str]:
        return await self._repository.list_ids(client_ip, pending)

    async def record_status(
        self, client_ip: str, job_id: str, status: JobStatus, containers: list[str], data: Any
    ) -> None:
        """Record a job that someone else runs (PUT /api/status): status only, no result."""
        now = self._clock()
        job = Job(
            id=job_id,
            client_ip=client_ip,
            containers=containers,
            data=data,
            origin=JobOrigin.RECORDED,
            status=status,
            created_at=now,
            updated_at=now,
        )
        await self._repository.record(job)
        self._queue.forget(job.key)

    async def prune(self, finished_before: float) -> int:
        """Delete finished jobs older than `finished_before`; returns how many went."""
        removed = await self._repository.prune(finished_before)
        if removed:
            self._queue.forget()  # some may still be remembered in memory
        return removed

    async def resources(self, model_id: str | None) -> dict[str, Any]:
        return await self._gateway.resources(model_id)

    # -- streaming ----------------------------------------------------------

    async def open_stream(self, client_ip: str, request: JobRequest) -> StreamJob:
        """Admit and record a streamed job; the caller relays `StreamJob.chunks()`."""
        # The whole request passes the guardian, as in the reference; only the first container streams.
        self._check(request, client_ip)
        containers = request.containers[:1]
        self._queue.admit(containers[0])
        job = self._new_job(client_ip, JobRequest(containers, request.data, False), JobOrigin.STREAM, JobStatus.RUNNING)
        try:
            await self._repository.add(job)
        except BaseException as error:
            self._give_back([(False, job)], refused=isinstance(error, Overloaded))
            raise
        self._queue.count_admitted(containers[0])
        return StreamJob(self, job)

    # -- model calls (/v1) ----------------------------------------------------

    async def open_model_call(
        self, client_ip: str, model: str, container: str, data: Any, gate: Gate | None = None
    ) -> ModelCall:
        """Admit and store (as running) a call to `model` served by `container`; the caller runs it.

        Raises Rejected (guardian), Overloaded (bounds) or the store's error, and NotAdmitted
        (nothing stored) when `gate`, the caller's admission, is closed; once this returns, the
        job exists and the caller must finish it (`async with` does).
        """
        self._guardian.check_offchain([container], False, client_ip)
        self._queue.admit(container)
        job = self._new_job(client_ip, JobRequest([container], data), JobOrigin.MODEL, JobStatus.RUNNING)
        job.model = model
        try:
            await self._repository.add(job, gate)
        except BaseException as error:
            self._give_back([(False, job)], refused=isinstance(error, Overloaded))
            raise
        self._queue.count_admitted(container)
        return ModelCall(job, self._repository, self._gateway, self._queue)

    async def _finish_stream(self, job: Job, result: ContainerResult) -> None:
        status = JobStatus.FAILED if result.failed else JobStatus.SUCCESS
        try:
            # Retried while the store cannot write, as for queued jobs (queue.py).
            stored = await self._queue.store_outcome(job, status, result, [])
            if stored is not None:
                status, result = stored[0], stored[1]
        finally:
            self._queue.release(job.containers[0], status)
        log_outcome(job.id, status, result, kind="stream job")


class StreamJob:
    """One streamed job: relays the container's bytes and stores the joined text."""

    def __init__(self, desk: JobDesk, job: Job) -> None:
        self._desk = desk
        self.job = job
        self._upstream: AsyncIterator[bytes] | None = None
        self._finished = False

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def container(self) -> str:
        return self.job.containers[0]

    async def start(self) -> None:
        """Wait until the service accepts the request; on failure the job fails and the error is raised."""
        upstream = self._desk.gateway.stream(self.container, self.job.data).__aiter__()
        try:
            await upstream.__anext__()  # the gateway yields b"" once the service answered
        except StopAsyncIteration:
            await self._finish_failed("the container closed the stream at once")
            raise JobError("The container closed the stream at once", {"container": self.container}) from None
        except JobError as error:
            await self._finish_failed(error.message)
            raise
        except BaseException as error:
            await asyncio.shield(self._finish_failed(f"stream could not start: {type(error).__name__}"))
            raise
        self._upstream = upstream

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """Relay the output. Failures after the start end the stream and fail the job."""
        assert self._upstream is not None, "start() first"
        received: list[bytes] = []
        error: str | None = "the client went away before the stream ended"
        try:
            async for chunk in self._upstream:
                received.append(chunk)
                yield chunk
            error = None
        except (asyncio.CancelledError, GeneratorExit):
            if self._desk.grace_over:  # cut by the node's shutdown, not by the client
                error = "the node shut down before the stream ended"
            raise
        except JobError as failure:
            error = failure.message
        except Exception as failure:  # the stream is already under way: record, don't raise
            error = f"{type(failure).__name__}: {failure}" if str(failure) else type(failure).__name__
        finally:
            text = b"".join(received).decode("utf-8", errors="replace")
            result = (
                ContainerResult(self.container, error=error)
                if error is not None
                else ContainerResult(self.container, output={"output": text})
            )
            await asyncio.shield(self._finish(result))

    async def _finish_failed(self, reason: str) -> None:
        await self._finish(ContainerResult(self.container, error=reason))

    async def _finish(self, result: ContainerResult) -> None:
        if not self._finished:
            self._finished = True
            await self._desk._finish_stream(self.job, result)
