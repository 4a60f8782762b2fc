"""The chain's leader logic on in-memory ports: one sender per wallet, take-over, fencing.

ChainLeader runs on an InMemoryLeaseStore; the Processor runs on an InMemoryChainRepository,
with stand-ins for the chain adapters (contracts, wallet, job desk) that record what the node
would have sent.
"""

from __future__ import annotations

import asyncio
from typing import Any

from node.chain.leader import ChainLeader, Role, lease_name
from node.chain.processor import Processor
from node.chain.records import DelegatedRecord, DelegatedStatus, DeliveryStatus
from node.chain.subscription import Subscription
from node.jobs.model import ContainerResult, JobStatus, RunResult
from node.leases import Lease
from tests.unit.chain.fakes import InMemoryChainRepository, InMemoryLeaseStore

OWNER = "0x" + "11" * 20
ZERO = "0x" + "00" * 20


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def leader(store: InMemoryLeaseStore, clock: Clock, node: str, take_over: Any = None) -> ChainLeader:
    async def nothing() -> None:
        return None

    def make_lease(on_change: Any) -> Lease:
        return Lease(store, lease_name("0xABC"), node, 5.0, 1.5, on_change, monotonic=clock)

    return ChainLeader(make_lease, take_over or nothing, retry_delay=0.01)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


# -- ChainLeader --------------------------------------------------------------------


async def test_one_of_two_nodes_leads_and_the_other_takes_over_when_it_dies() -> None:
    clock = Clock()
    store = InMemoryLeaseStore(clock)
    a, b = leader(store, clock, "A"), leader(store, clock, "B")
    await a.step()
    await b.step()
    await settle()
    assert (a.role, b.role) == (Role.LEADER, Role.STANDBY)
    assert store.rows["chain:0xabc"].holder == "A"
    clock.now += 1.5
    await a.step()  # renewed
    await b.step()
    assert (a.role, b.role) == (Role.LEADER, Role.STANDBY)
    clock.now += 5.1  # A dies: no renewal past the lease time
    await b.step()
    await settle()
    assert b.role is Role.LEADER and await b.fence()
    assert a.role is Role.STANDBY and not await a.fence()  # A, waking up, must not send


async def test_no_delivery_before_the_take_over_is_done_and_it_is_retried() -> None:
    clock = Clock()
    store = InMemoryLeaseStore(clock)
    gate = asyncio.Event()
    calls = 0

    async def take_over() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("chain unreachable")
        await gate.wait()

    a = leader(store, clock, "A", take_over)
    await a.step()
    await asyncio.sleep(0.05)
    assert a.role is Role.TAKING_OVER and not a.may_deliver() and not await a.fence()
    assert calls == 2  # the first attempt failed and was retried
    gate.set()
    await settle()
    assert a.role is Role.LEADER and a.may_deliver()


async def test_losing_the_lease_during_the_take_over_cancels_it() -> None:
    clock = Clock()
    store = InMemoryLeaseStore(clock)
    cancelled = asyncio.Event()

    async def take_over() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    a = leader(store, clock, "A", take_over)
    await a.step()
    await settle()
    clock.now += 6.0
    store.rows["chain:0xabc"] = store.rows["chain:0xabc"].__class__("chain:0xabc", "B", clock.now, clock.now + 5)
    await a.step()
    await settle()
    assert cancelled.is_set() and a.role is Role.STANDBY


async def test_close_releases_the_lease_for_the_standby() -> None:
    clock = Clock()
    store = InMemoryLeaseStore(clock)
    a, b = leader(store, clock, "A"), leader(store, clock, "B")
    await a.step()
    await settle()
    await a.close()
    assert not await a.fence()
    await b.step()  # at once, not after the lease time
    await settle()
    assert b.role is Role.LEADER


# -- the processor behind the gate ----------------------------------------------------


class Gate:
    def __init__(self, may: bool, fence: bool) -> None:
        self.may, self.fence_ok, self.fenced = may, fence, 0

    def may_deliver(self) -> bool:
        return self.may

    async def fence(self) -> bool:
        self.fenced += 1
        return self.fence_ok


class Functions:
    def deliverComputeDelegatee(self, *args: Any) -> tuple[str, tuple[Any, ...]]:
        return ("deliverComputeDelegatee", args)


class Contracts:
    class coordinator:
        functions = Functions()

    async def delegate_created_id(self, owner: str, nonce: int) -> int:
        return 0  # not created on chain yet: the delivery creates it


class Wallet:
    address = "0x" + "22" * 20
    node_wallet = ZERO

    def __init__(self) -> None:
        self.sent: list[Any] = []
        self.waited: list[str] = []

    async def simulate(self, fn: Any, estimate: bool = True, extra: Any = None) -> int:
        return 100_000

    async def send(self, fn: Any, gas: int, on_signed: Any, extra: Any = None) -> str:
        tx_hash = "0x" + f"{len(self.sent) + 1:064x}"
        await on_signed(tx_hash, len(self.sent))
        self.sent.append(fn)
        return tx_hash

    async def wait(self, tx_hash: str, poll: float = 0.1, extra: Any = None) -> int:
        self.waited.append(tx_hash)
        return 1


class Jobs:
    def __init__(self) -> None:
        self.runs = 0

    def has_room(self, container: str) -> bool:
        return True

    async def run_for_chain(
        self, containers: Any, data: Any, requires_proof: bool, source: Any, destination: Any
    ) -> RunResult:
        self.runs += 1
        return RunResult(JobStatus.SUCCESS, ContainerResult(containers[-1], output="hello"), [])


def delegated(nonce: int = 1) -> tuple[DelegatedRecord, Subscription]:
    wire = {
        "owner": OWNER, "active_at": 0, "period": 0, "frequency": 1, "redundancy": 1,
        "containers": "0x" + "33" * 32, "lazy": False, "verifier": ZERO, "payment_amount": 0,
        "payment_token": ZERO, "wallet": ZERO,
    }  # fmt: skip
    signature = {"nonce": nonce, "expiry": 10**10, "v": 27, "r": 1, "s": 2}
    record = DelegatedRecord(OWNER, nonce, wire, signature, None, OWNER, DelegatedStatus.TRACKING)
    return record, Subscription.from_wire(wire)


def processor(repository: InMemoryChainRepository, gate: Gate) -> tuple[Processor, Wallet, Jobs]:
    wallet, jobs = Wallet(), Jobs()
    made = Processor(Contracts(), wallet, None, jobs, repository, gate=gate, retry_delay=60.0)  # type: ignore[arg-type]
    return made, wallet, jobs


async def tick_with_one_delegated(repository: InMemoryChainRepository, gate: Gate) -> tuple[Processor, Wallet, Jobs]:
    """A processor tracking one due delegated subscription, after one tick has run."""
    made, wallet, jobs = processor(repository, gate)
    made.track_delegated(*delegated(), ["echo"])
    made._tick(2000)
    await settle()
    return made, wallet, jobs


async def test_a_standby_tracks_but_starts_no_delivery() -> None:
    repository = InMemoryChainRepository()
    made, wallet, jobs = await tick_with_one_delegated(repository, Gate(may=False, fence=True))
    assert made.is_tracked(f"del:{OWNER}:1") and made.pending == 0
    assert jobs.runs == 0 and wallet.sent == [] and repository.rows == {}


async def test_the_leader_delivers_and_records_before_sending() -> None:
    repository = InMemoryChainRepository()
    gate = Gate(may=True, fence=True)
    made, wallet, jobs = await tick_with_one_delegated(repository, gate)
    await made.close()
    assert jobs.runs == 1 and len(wallet.sent) == 1 and gate.fenced == 1
    row = repository.rows[(f"del:{OWNER}:1", 1)]
    assert row.status is DeliveryStatus.DELIVERED and row.tx_hash == "0x" + f"{1:064x}"


async def test_a_node_that_lost_the_lease_does_not_send() -> None:
    """Fencing: the lease ran out while the containers ran; the send is skipped and the
    interval is left RUNNING for the new leader's take-over to re-check."""
    repository = InMemoryChainRepository()
    gate = Gate(may=True, fence=False)
    made, wallet, jobs = await tick_with_one_delegated(repository, gate)
    await made.close()
    assert jobs.runs == 1 and gate.fenced == 1
    assert wallet.sent == []
    assert repository.rows[(f"del:{OWNER}:1", 1)].status is DeliveryStatus.RUNNING


async def test_take_over_recovery_finishes_what_the_dead_leader_left() -> None:
    repository = InMemoryChainRepository()
    await repository.begin_delivery("sub:7", 1, 7)
    await repository.record_sent("sub:7", 1, "0x" + "ab" * 32, 3)  # sent, not yet mined
    await repository.begin_delivery("sub:8", 2, 8)  # the dead leader was running containers
    made, wallet, _ = processor(repository, Gate(may=True, fence=True))
    await made.recover()
    await settle()
    assert wallet.waited == ["0x" + "ab" * 32] and wallet.sent == []  # awaited, never sent again
    assert repository.rows[("sub:7", 1)].status is DeliveryStatus.DELIVERED
    interrupted = repository.rows[("sub:8", 2)]
    assert interrupted.status is DeliveryStatus.FAILED and interrupted.attempts == 0
    assert "lost the lease" in (interrupted.reason or "")
