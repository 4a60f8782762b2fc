"""Tracking subscriptions and delivering each due interval once.

Every tick the processor reads the latest block and, for each tracked subscription
that has an interval due at that chain time, starts one delivery: re-read the
subscription (cancelled?), skip if the interval's redundancy is met or this node
already responded, pre-simulate, read the inputs, run the containers through the
same runner as off-chain jobs, encode the output, simulate, send, and wait for
the receipt. Each step that matters is written to the store first, so that after
a restart a sent transaction is awaited rather than sent again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from node.chain.contracts import BlockClock, Contracts
from node.chain.ports import ChainRepository
from node.chain.records import (
    DelegatedRecord,
    DelegatedStatus,
    DeliveryRecord,
    DeliveryStatus,
    onchain_key,
)
from node.chain.reverts import Revert, RevertAction
from node.chain.serialize import serialize_output
from node.chain.signers import read_signer
from node.chain.subscription import Subscription
from node.chain.wallet import SendFailed, SimulationFailed, Wallet
from node.jobs.errors import Overloaded
from node.jobs.model import JobStatus, Location, RunResult

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3


class ChainObserver(Protocol):
    """Where the chain module reports what metrics want (node.metrics.ChainMetrics)."""

    def head(self, block: int) -> None: ...

    def synced(self, block: int) -> None: ...

    def delivered(self, outcome: str) -> None: ...


class DeliveryGate(Protocol):
    """Whether this node may send (node.chain.leader.ChainLeader: the wallet's lease holder)."""

    def may_deliver(self) -> bool: ...

    async def fence(self) -> bool:
        """Checked right before each transaction: True only if the node still leads, with margin."""
        ...


class ChainJobs(Protocol):
    """Runs a delivery's containers as a job of the node's queue (node.jobs.desk.JobDesk)."""

    def has_room(self, container: str) -> bool: ...

    async def run_for_chain(
        self, containers: Sequence[str], data: Any, requires_proof: bool, source: Location, destination: Location
    ) -> RunResult:
        """Raises Overloaded when the queue is full."""
        ...


@dataclass(eq=False)
class Tracked:
    key: str
    sub: Subscription
    containers: list[str]
    delegated: DelegatedRecord | None = None
    verified: bool = False  # delegated: signer checked against the owner's getSigner()
    done: set[int] = field(default_factory=set)
    retry_at: dict[int, float] = field(default_factory=dict)
    busy: bool = False

    @property
    def label(self) -> str:
        if self.delegated is None:
            return f"subscription {self.sub.id}"
        known = f" (id {self.sub.id})" if self.sub.id is not None else ""
        return f"delegated subscription {self.sub.owner}/{self.delegated.nonce}{known}"

    def log_extra(self, interval: int | None = None) -> dict[str, Any]:
        extra: dict[str, Any] = {"subscription_id": self.sub.id if self.sub.id is not None else self.key}
        if self.delegated is not None:
            extra["delegated"] = {"owner": self.delegated.owner, "nonce": self.delegated.nonce}
        if interval is not None:
            extra["interval"] = interval
        return extra


class Processor:
    def __init__(
        self,
        contracts: Contracts,
        wallet: Wallet,
        clock: BlockClock,
        jobs: ChainJobs,
        repository: ChainRepository,
        *,
        tick: float = 0.1,
        retry_delay: float = 1.0,
        observer: ChainObserver | None = None,
        gate: DeliveryGate | None = None,
    ) -> None:
        self._contracts = contracts
        self._gate = gate  # None: a single node that always delivers
        self._observer = observer
        self._wallet = wallet
        self._clock = clock
        self._jobs = jobs
        self._repository = repository
        self._tick_seconds = tick
        self._retry_delay = retry_delay
        self._tracked: dict[str, Tracked] = {}
        self._busy_ids: dict[int, str] = {}  # on-chain id -> key of the entry delivering it
        self._resuming: dict[str, int] = {}  # key -> interval whose sent tx we await after a restart
        self._tasks: set[asyncio.Task[None]] = set()

    # -- what others see ----------------------------------------------------------

    @property
    def pending(self) -> int:
        """Deliveries under way: containers running or transactions awaiting their receipt."""
        return sum(1 for entry in self._tracked.values() if entry.busy) + len(self._resuming)

    @property
    def tracked(self) -> int:
        return len(self._tracked)

    def is_tracked(self, key: str) -> bool:
        return key in self._tracked

    # -- tracking -----------------------------------------------------------------

    def track(self, sub: Subscription, containers: list[str]) -> None:
        assert sub.id is not None
        key = onchain_key(sub.id)
        if key in self._tracked:
            return
        entry = Tracked(key, sub, containers)
        self._tracked[key] = entry
        log.info("tracking %s (containers %s)", entry.label, ",".join(containers), extra=entry.log_extra())

    def track_delegated(self, record: DelegatedRecord, sub: Subscription, containers: list[str]) -> None:
        if record.key in self._tracked:
            return
        if record.subscription_id is not None:
            sub = sub.with_id(record.subscription_id)
        entry = Tracked(
            record.key, sub, containers, delegated=record, verified=record.status is DelegatedStatus.TRACKING
        )
        self._tracked[record.key] = entry
        log.info("tracking %s (containers %s)", entry.label, ",".join(containers), extra=entry.log_extra())

    async def _untrack(
        self, entry: Tracked, why: str, level: int = logging.INFO, status: DelegatedStatus = DelegatedStatus.DROPPED
    ) -> None:
        if self._tracked.get(entry.key) is entry:
            del self._tracked[entry.key]
        log.log(level, "%s: no longer tracked: %s", entry.label, why, extra=entry.log_extra())
        if entry.delegated is not None:
            await self._repository.set_delegated(
                entry.delegated.owner, entry.delegated.nonce, status, reason=why, subscription_id=entry.sub.id
            )

    # -- recovery -----------------------------------------------------------------

    async def recover(self) -> None:
        """After a restart: await transactions that were out, forget interrupted runs."""
        for record in await self._repository.open_deliveries():
            if record.status is DeliveryStatus.SENT and record.tx_hash:
                self._resuming[record.sub_key] = record.interval
                log.info(
                    "resuming: waiting for transaction %s (%s, interval %d)",
                    record.tx_hash,
                    record.sub_key,
                    record.interval,
                    extra={"subscription_id": record.subscription_id or record.sub_key, "interval": record.interval},
                )
                self._spawn(self._resume(record))
            else:
                await self._repository.finish_delivery(
                    record.sub_key,
                    record.interval,
                    DeliveryStatus.FAILED,
                    "interrupted: the node delivering it restarted or lost the lease",
                )

    async def _resume(self, record: DeliveryRecord) -> None:
        extra = {"subscription_id": record.subscription_id or record.sub_key, "interval": record.interval}
        try:
            assert record.tx_hash is not None
            status = await self._wallet.wait(record.tx_hash, extra=extra)
            if status == 1:
                await self._repository.finish_delivery(record.sub_key, record.interval, DeliveryStatus.DELIVERED)
                log.info("transaction %s was mined: delivered", record.tx_hash, extra=extra)
            else:
                reason = "transaction reverted" if status == 0 else "transaction was dropped by the chain"
                await self._repository.finish_delivery(
                    record.sub_key, record.interval, DeliveryStatus.FAILED, reason, failed_attempt=True
                )
                log.warning("transaction %s: %s; will retry", record.tx_hash, reason, extra=extra)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("could not settle transaction %s; will look again", record.tx_hash, extra=extra)
            await asyncio.sleep(self._retry_delay)
            self._spawn(self._resume(record))
            return
        self._resuming.pop(record.sub_key, None)

    # -- the loop -----------------------------------------------------------------

    async def run_forever(self) -> None:
        failures = 0
        while True:
            try:
                block = await self._clock.refresh()
                if self._observer is not None:
                    self._observer.head(block.number)
                self._tick(block.timestamp)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as error:
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    log.warning("chain unreachable (%s): %s", type(error).__name__, error)
            await asyncio.sleep(self._tick_seconds if failures == 0 else min(5.0, self._tick_seconds * 2**failures))

    def _tick(self, now: int) -> None:
        if self._gate is not None and not self._gate.may_deliver():
            return  # a standby tracks subscriptions but starts no delivery
        monotonic = time.monotonic()
        for entry in list(self._tracked.values()):
            if entry.busy or entry.key in self._resuming:
                continue
            sub = entry.sub
            if sub.id is not None and self._busy_ids.get(sub.id, entry.key) != entry.key:
                continue  # the same on-chain subscription is being delivered through another entry
            if not sub.active(now):
                if sub.cancelled:
                    self._start(entry, self._untrack(entry, "cancelled"))
                continue
            interval = sub.interval(now)
            if interval > sub.frequency:
                self._start(entry, self._untrack(entry, f"completed (interval {interval} > frequency {sub.frequency})"))
                continue
            if interval in entry.done:
                if interval == sub.frequency or entry.delegated is not None:
                    self._start(entry, self._untrack_done(entry, interval))
                continue
            if entry.retry_at.get(interval, 0.0) > monotonic:
                continue
            if not self._jobs.has_room(entry.containers[0]):
                continue  # the job queue is full: wait for room, next tick
            self._start(entry, self._work(entry, interval, now))

    def _start(self, entry: Tracked, work: Coroutine[Any, Any, None]) -> None:
        entry.busy = True
        if entry.sub.id is not None:
            self._busy_ids.setdefault(entry.sub.id, entry.key)

        async def run() -> None:
            try:
                await work
            finally:
                entry.busy = False
                if entry.sub.id is not None and self._busy_ids.get(entry.sub.id) == entry.key:
                    del self._busy_ids[entry.sub.id]

        self._spawn(run())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _untrack_done(self, entry: Tracked, interval: int) -> None:
        if entry.delegated is not None:
            record = await self._repository.get_delivery(entry.key, interval)
            if record is not None and record.status is DeliveryStatus.DELIVERED:
                await self._untrack(entry, f"delivered interval {interval}", status=DelegatedStatus.DELIVERED)
            else:
                await self._untrack(entry, f"interval {interval} needs nothing more from this node")
        else:
            await self._untrack(entry, "completed (last interval done)")

    # -- one delivery -------------------------------------------------------------

    async def _work(self, entry: Tracked, interval: int, now: int) -> None:
        try:
            if entry.delegated is not None:
                await self._work_delegated(entry, interval, now)
            else:
                await self._work_onchain(entry, interval, now)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            # The chain or the store could not be reached: nothing was decided, try again.
            log.warning(
                "%s, interval %d: %s: %s; will retry",
                entry.label,
                interval,
                type(error).__name__,
                error,
                extra=entry.log_extra(interval),
            )
            entry.retry_at[interval] = time.monotonic() + self._retry_delay

    async def _skip_if_served(self, entry: Tracked, subscription_id: int, interval: int) -> bool:
        """True when the interval needs nothing from this node (redundancy met, or we responded)."""
        count = await self._contracts.redundancy_count(subscription_id, interval)
        if count >= entry.sub.redundancy:
            entry.done.add(interval)
            log.info(
                "%s, interval %d: redundancy met (%d of %d); not delivering",
                entry.label,
                interval,
                count,
                entry.sub.redundancy,
                extra=entry.log_extra(interval),
            )
            return True
        if await self._contracts.node_responded(subscription_id, interval, self._wallet.address):
            entry.done.add(interval)
            log.info(
                "%s, interval %d: this node already responded", entry.label, interval, extra=entry.log_extra(interval)
            )
            return True
        return False

    async def _work_onchain(self, entry: Tracked, interval: int, now: int) -> None:
        assert entry.sub.id is not None
        fresh = await self._contracts.subscription(entry.sub.id)
        if not fresh.exists:
            await self._untrack(entry, "not found on chain")
            return
        if fresh.cancelled:
            await self._untrack(entry, "cancelled")
            return
        entry.sub = fresh
        if await self._skip_if_served(entry, fresh.id, interval):  # type: ignore[arg-type]
            return
        if fresh.provides_payment and not await self._contracts.can_pay(fresh):
            await self._untrack(entry, "its wallet cannot pay", logging.WARNING)
            return
        await self._deliver(entry, interval, now)

    async def _work_delegated(self, entry: Tracked, interval: int, now: int) -> None:
        record = entry.delegated
        assert record is not None
        if not entry.verified:
            # Subscriptions accepted before the node checked signers on the REST request.
            # An unreachable chain raises: tried again later.
            expected = await read_signer(self._contracts.signer_of, entry.sub.owner)
            if expected.lower() != record.signer.lower():
                reason = (
                    f"signer mismatch: the signature was made by {record.signer}, "
                    f"but the owner's getSigner() is {expected}"
                )
                log.warning("%s not delivered: %s", entry.label, reason, extra=entry.log_extra())
                await self._untrack(entry, reason, logging.DEBUG, status=DelegatedStatus.REJECTED)
                return
            entry.verified = True
            await self._repository.set_delegated(record.owner, record.nonce, DelegatedStatus.TRACKING)
        created = await self._contracts.delegate_created_id(entry.sub.owner, record.nonce)
        if created:
            if entry.sub.id != created:
                entry.sub = entry.sub.with_id(created)
                record.subscription_id = created
            holder = self._busy_ids.setdefault(created, entry.key)
            if holder != entry.key:
                entry.retry_at[interval] = time.monotonic() + self._retry_delay
                return
            if await self._skip_if_served(entry, created, interval):
                return
        elif record.signature["expiry"] <= now:
            await self._untrack(entry, "signature expired before it could be delivered", logging.WARNING)
            return
        await self._deliver(entry, interval, now)

    def _delivery_fn(self, entry: Tracked, interval: int, inputs: bytes, output: bytes, proof: bytes) -> Any:
        functions = self._contracts.coordinator.functions
        node_wallet = self._wallet.node_wallet
        if entry.delegated is None:
            return functions.deliverCompute(entry.sub.id, interval, inputs, output, proof, node_wallet)
        signature = entry.delegated.signature
        return functions.deliverComputeDelegatee(
            signature["nonce"],
            signature["expiry"],
            entry.sub.to_chain(),
            signature["v"],
            int(signature["r"]).to_bytes(32, "big"),
            int(signature["s"]).to_bytes(32, "big"),
            interval,
            inputs,
            output,
            proof,
            node_wallet,
        )

    async def _deliver(self, entry: Tracked, interval: int, now: int) -> None:
        extra = entry.log_extra(interval)
        record = await self._repository.begin_delivery(entry.key, interval, entry.sub.id)
        if record.status is DeliveryStatus.DELIVERED:
            entry.done.add(interval)
            return
        if record.status is DeliveryStatus.ABANDONED or record.attempts >= MAX_ATTEMPTS:
            await self._give_up(entry, interval, record.reason or "too many failed attempts")
            return
        if record.status is DeliveryStatus.SENT and record.tx_hash:
            # A transaction for this interval is out already: its receipt decides.
            await self._settle(entry, interval, record.tx_hash)
            return
        # Cheap check before running anything: would the coordinator take a delivery now?
        if not entry.sub.requires_proof:
            try:
                await self._wallet.simulate(
                    self._delivery_fn(entry, interval, b"", b"", b""), estimate=False, extra=extra
                )
            except SimulationFailed as failure:
                # Only the coordinator's own errors answer that question. The consumer may refuse
                # this empty placeholder output (a contract that abi.decodes it reverts) and take
                # the real one, which is simulated again before sending; the reference node
                # ignores such reverts here too.
                if failure.revert.name is not None:
                    await self._on_revert(entry, interval, failure.revert)
                    return
                log.debug(
                    "%s, interval %d: the placeholder delivery reverts in the consumer (%s); running anyway",
                    entry.label,
                    interval,
                    failure.revert.describe(),
                    extra=extra,
                )
        if entry.delegated is not None:
            data: Any = entry.delegated.data
            source = Location.OFFCHAIN
        else:
            try:
                inputs = await self._contracts.container_inputs(
                    entry.sub.owner,
                    entry.sub.id,  # type: ignore[arg-type]
                    interval,
                    now,
                    self._wallet.address,
                )
            except Exception as error:
                log.info("%s: no inputs from the consumer (%s)", entry.label, error, extra=extra)
                inputs = b""
            data = inputs.hex()
            source = Location.ONCHAIN
        log.info("%s, interval %d: running %s", entry.label, interval, ",".join(entry.containers), extra=extra)
        try:
            outcome = await self._jobs.run_for_chain(
                entry.containers, data, entry.sub.requires_proof, source, Location.ONCHAIN
            )
        except Overloaded as full:
            # Not a failed attempt: the interval waits for room in the queue.
            await self._repository.finish_delivery(entry.key, interval, DeliveryStatus.FAILED, full.message)
            entry.retry_at[interval] = time.monotonic() + full.retry_after
            log.info(
                "%s, interval %d: %s; trying again in %gs",
                entry.label,
                interval,
                full.message,
                full.retry_after,
                extra=extra,
            )
            return
        if outcome.status is not JobStatus.SUCCESS:
            await self._failed(entry, interval, f"container {outcome.result.container} failed: {outcome.result.error}")
            return
        try:
            inputs_bytes, output_bytes, proof_bytes = serialize_output(outcome.result.output)
        except ValueError as error:
            await self._failed(entry, interval, f"container output cannot be delivered: {error}")
            return
        fn = self._delivery_fn(entry, interval, inputs_bytes, output_bytes, proof_bytes)
        try:
            gas = await self._wallet.simulate(fn, extra=extra)
        except SimulationFailed as failure:
            await self._on_revert(entry, interval, failure.revert)
            return

        if self._gate is not None and not await self._gate.fence():
            # Another node may lead by now: its take-over re-checks this interval (left RUNNING).
            log.warning(
                "%s, interval %d: this node no longer holds the wallet's lease; not sending",
                entry.label,
                interval,
                extra=extra,
            )
            entry.retry_at[interval] = time.monotonic() + self._retry_delay
            return

        async def on_signed(tx_hash: str, nonce: int) -> None:
            await self._repository.record_sent(entry.key, interval, tx_hash, nonce)

        try:
            tx_hash = await self._wallet.send(fn, gas, on_signed, extra=extra)
        except SendFailed as error:
            await self._failed(entry, interval, f"transaction refused: {error}")
            return
        log.info("%s, interval %d: sent transaction %s", entry.label, interval, tx_hash, extra=extra)
        await self._settle(entry, interval, tx_hash)

    async def _settle(self, entry: Tracked, interval: int, tx_hash: str) -> None:
        status = await self._wallet.wait(tx_hash, extra=entry.log_extra(interval))
        if self._observer is not None:
            self._observer.delivered({1: "success", 0: "reverted"}.get(status, "dropped"))  # type: ignore[arg-type]
        if status == 1:
            await self._delivered(entry, interval, tx_hash)
        elif status == 0:
            await self._failed(entry, interval, f"transaction {tx_hash} reverted")
        else:
            await self._failed(entry, interval, f"transaction {tx_hash} was dropped by the chain")

    async def _delivered(self, entry: Tracked, interval: int, tx_hash: str) -> None:
        entry.done.add(interval)
        subscription_id = entry.sub.id
        if entry.delegated is not None and subscription_id is None:
            subscription_id = await self._contracts.delegate_created_id(entry.sub.owner, entry.delegated.nonce) or None
            if subscription_id:
                entry.sub = entry.sub.with_id(subscription_id)
        await self._repository.finish_delivery(
            entry.key, interval, DeliveryStatus.DELIVERED, subscription_id=subscription_id
        )
        log.info("%s, interval %d: delivered in %s", entry.label, interval, tx_hash, extra=entry.log_extra(interval))
        if entry.delegated is not None:
            await self._untrack(entry, f"delivered interval {interval}", status=DelegatedStatus.DELIVERED)

    async def _failed(self, entry: Tracked, interval: int, reason: str) -> None:
        attempts = await self._repository.finish_delivery(
            entry.key, interval, DeliveryStatus.FAILED, reason, failed_attempt=True
        )
        if attempts >= MAX_ATTEMPTS:
            await self._give_up(entry, interval, reason)
            return
        entry.retry_at[interval] = time.monotonic() + self._retry_delay * 2 ** (attempts - 1)
        log.warning(
            "%s, interval %d: attempt %d of %d failed: %s",
            entry.label,
            interval,
            attempts,
            MAX_ATTEMPTS,
            reason,
            extra=entry.log_extra(interval),
        )

    async def _give_up(self, entry: Tracked, interval: int, reason: str) -> None:
        entry.done.add(interval)
        await self._repository.finish_delivery(entry.key, interval, DeliveryStatus.ABANDONED, reason)
        log.error(
            "%s, interval %d: giving up after %d failed attempts: %s",
            entry.label,
            interval,
            MAX_ATTEMPTS,
            reason,
            extra=entry.log_extra(interval),
        )
        if entry.delegated is not None or entry.sub.is_callback:
            await self._untrack(entry, f"interval {interval} could not be delivered", logging.WARNING)

    async def _on_revert(self, entry: Tracked, interval: int, revert: Revert) -> None:
        action = revert.action
        if action is not RevertAction.FAILED:  # failures are logged with their attempt count
            level = logging.INFO if revert.quiet or action is RevertAction.RETRY else logging.WARNING
            log.log(
                level,
                "%s, interval %d: the coordinator would revert: %s",
                entry.label,
                interval,
                revert.describe(),
                extra=entry.log_extra(interval),
            )
        if action is RevertAction.DONE:
            entry.done.add(interval)
            await self._repository.finish_delivery(entry.key, interval, DeliveryStatus.ABANDONED, revert.describe())
        elif action is RevertAction.FINISHED:
            await self._repository.finish_delivery(entry.key, interval, DeliveryStatus.ABANDONED, revert.describe())
            await self._untrack(entry, revert.describe())
        elif action is RevertAction.DROP:
            await self._repository.finish_delivery(entry.key, interval, DeliveryStatus.ABANDONED, revert.describe())
            await self._untrack(entry, revert.describe(), logging.WARNING)
        else:
            await self._failed(entry, interval, f"the coordinator would revert: {revert.describe()}")
