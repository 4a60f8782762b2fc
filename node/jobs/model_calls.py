"""A call to a model (an OpenAI-style `/v1` request) as a job.

The entrypoint speaks the model's wire format; here the call is a job like
any other: admitted into the queue's bounds, stored (as running) before the
container is asked, and finished with its result and the tokens it used. It
runs inside the request, as streamed jobs do, so the answer goes straight
back; a client that leaves cancels the container call, and the job records
that. The answer may leave while its outcome is written (`finish_soon`): the
store's round then overlaps the answer's trip to the client, and whoever reads
the job (by id, or the request's own end) waits for the write.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING

from node.jobs.errors import ContainerFailed, JobError
from node.jobs.model import ContainerResult, Failure, Job, JobStatus, Location, TokenUsage
from node.jobs.queue import log_outcome

if TYPE_CHECKING:
    from node.jobs.ports import JobRepository, ServiceGateway
    from node.jobs.queue import JobQueue

# Another write to submit just before the outcome's (the caller's usage), or None.
Alongside = Callable[[], Awaitable[None] | None]

CLIENT_LEFT = "the client went away before the answer was complete"
# A request cut by the node's own shutdown (the grace ran out) is not the client's doing.
NODE_STOPPED = "the node shut down before the answer was complete"


class ModelCall:
    """One admitted, stored model call. Use as `async with`: leaving it unfinished fails the job."""

    def __init__(self, job: Job, repository: JobRepository, gateway: ServiceGateway, queue: JobQueue) -> None:
        self.job = job
        self._repository = repository
        self._gateway = gateway
        self._queue = queue
        self._upstream: AsyncIterator[bytes] | None = None
        self._storing: asyncio.Future[None] | None = None  # the outcome's write, once started

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def container(self) -> str:
        return self.job.containers[0]

    @property
    def finished(self) -> bool:
        return self._storing is not None

    def bill_to(self, caller: str | None) -> None:
        """Who the call's usage is billed to: stored with its outcome, however it ends."""
        self.job.caller = caller

    async def complete(self) -> ContainerResult:
        """Ask the container for the whole answer (not finished yet: the caller reads usage from it)."""
        return await self._gateway.run(self.container, self.job.data, Location.OFFCHAIN, Location.OFFCHAIN, False)

    async def open_stream(self) -> AsyncIterator[bytes]:
        """Start the container's stream; raise ContainerFailed when it cannot start. Yields its output bytes."""
        upstream = self._gateway.stream(self.container, self.job.data).__aiter__()
        try:
            await upstream.__anext__()  # the gateway yields b"" once the service answered
        except StopAsyncIteration:
            raise ContainerFailed("The container closed the stream at once", {"container": self.container}) from None
        self._upstream = upstream
        return upstream

    def finish_soon(
        self,
        result: ContainerResult,
        usage: TokenUsage | None = None,
        along: Alongside | None = None,
    ) -> asyncio.Future[None]:
        """Start storing the outcome (once) and return at once: the future is done once it is stored.

        The caller may send the answer meanwhile (the store writes while it travels); reads of the
        job by id wait for the write (JobQueue.outcome_pending), and leaving `async with` waits for
        it. `along` submits another write first (the caller's usage), so that both take one store
        round. A second call returns the first one's future: an outcome is stored once."""
        if self._storing is None:
            status = JobStatus.FAILED if result.failed else JobStatus.SUCCESS
            self.job.status, self.job.result, self.job.usage = status, result, usage
            self._storing = asyncio.ensure_future(self._store(status, result, usage, along))
            self._queue.outcome_storing(self.job.key, self._storing)
            # The model is done with its place: a client may send its next call as soon as it
            # has this answer, before the outcome is stored.
            self._queue.release(self.container)
        return self._storing

    async def finish(self, result: ContainerResult, usage: TokenUsage | None = None) -> None:
        """Give back the job's place in the bounds and store the outcome (once)."""
        await asyncio.shield(self.finish_soon(result, usage))  # a cancelled caller leaves it stored

    async def fail(self, reason: str, failure: Failure = Failure.FAILED) -> None:
        await self.finish(ContainerResult(self.container, error=reason, failure=failure))

    async def _store(
        self,
        status: JobStatus,
        result: ContainerResult,
        usage: TokenUsage | None,
        along: Alongside | None,
    ) -> None:
        alongside = along() if along is not None else None  # submitted first: the same store round
        try:
            # Retried while the store cannot write; a result it can never hold becomes a failure (queue.py).
            stored = await self._queue.store_outcome(self.job, status, result, [], usage)
            if stored is not None and stored[0] is not status:
                status, result = stored[0], stored[1]
                self.job.status, self.job.result = status, result
        finally:
            self._queue.count_finished(self.container, status)
            if self._upstream is not None:
                closing = getattr(self._upstream, "aclose", None)
                if closing is not None:
                    with contextlib.suppress(Exception):
                        await closing()  # ends the container's stream if it is still going
            if alongside is not None:
                await alongside
        log_outcome(self.job.id, status, result, kind="model call")

    async def __aenter__(self) -> ModelCall:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: TracebackType | None
    ) -> None:
        if self._storing is not None:
            await asyncio.shield(self._storing)
            return
        if isinstance(error, asyncio.CancelledError) and self._queue.grace_over:
            reason = NODE_STOPPED
        elif error is None or isinstance(error, asyncio.CancelledError):
            reason = CLIENT_LEFT
        elif isinstance(error, JobError):
            reason = error.message
        else:
            reason = f"internal error: {type(error).__name__}"
        await self.fail(reason)  # shielded: a cancelled request must still leave its job finished
