"""A call to a model (an OpenAI-style `/v1` request) as a job.

The entrypoint speaks the model's wire format; here the call is a job like
any other: admitted into the queue's bounds, stored (as running) before the
container is asked, and finished with its result and the tokens it used. It
runs inside the request, as streamed jobs do, so the answer goes straight
back; a client that leaves cancels the container call, and the job records
that.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING

from node.jobs.errors import ContainerFailed, JobError
from node.jobs.model import ContainerResult, Failure, Job, JobStatus, Location, TokenUsage
from node.jobs.queue import log_outcome

if TYPE_CHECKING:
    from node.jobs.ports import JobRepository, ServiceGateway
    from node.jobs.queue import JobQueue

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
        self._finished = False

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def container(self) -> str:
        return self.job.containers[0]

    @property
    def finished(self) -> bool:
        return self._finished

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

    async def finish(self, result: ContainerResult, usage: TokenUsage | None = None) -> None:
        """Store the outcome (once) and give back the job's place in the bounds."""
        if self._finished:
            return
        self._finished = True
        status = JobStatus.FAILED if result.failed else JobStatus.SUCCESS
        self.job.status, self.job.result, self.job.usage = status, result, usage
        try:
            # Retried while the store cannot write; a result it can never hold becomes a failure (queue.py).
            stored = await self._queue.store_outcome(self.job, status, result, [], usage)
            if stored is not None and stored[0] is not status:
                status, result = stored[0], stored[1]
                self.job.status, self.job.result = status, result
        finally:
            self._queue.release(self.container, status)
            if self._upstream is not None:
                closing = getattr(self._upstream, "aclose", None)
                if closing is not None:
                    with contextlib.suppress(Exception):
                        await closing()  # ends the container's stream if it is still going
        log_outcome(self.job.id, status, result, kind="model call")

    async def fail(self, reason: str, failure: Failure = Failure.FAILED) -> None:
        await self.finish(ContainerResult(self.container, error=reason, failure=failure))

    async def __aenter__(self) -> ModelCall:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: TracebackType | None
    ) -> None:
        if self._finished:
            return
        if isinstance(error, asyncio.CancelledError) and self._queue.grace_over:
            reason = NODE_STOPPED
        elif error is None or isinstance(error, asyncio.CancelledError):
            reason = CLIENT_LEFT
        elif isinstance(error, JobError):
            reason = error.message
        else:
            reason = f"internal error: {type(error).__name__}"
        # Shielded: a cancelled request must still leave its job finished.
        await asyncio.shield(self.fail(reason))
