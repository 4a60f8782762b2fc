"""Builds and runs the chain module; `app.py` owns one of these while the node runs.

Connecting needs the RPC: until it answers, the node serves off-chain jobs as usual
and delegated subscriptions get `503 {"error": "Chain not ready"}`. Connecting is
retried in the background, so a chain that is briefly down never stops the node.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3 import AsyncHTTPProvider, AsyncWeb3

from node.chain.containers_lookup import ContainerLookup
from node.chain.contracts import BlockClock, Contracts
from node.chain.delegated import DelegatedHandler
from node.chain.guardian import ChainGuardian
from node.chain.leader import ChainLeader, Role, lease_name
from node.chain.listener import Listener
from node.chain.ports import ChainRepository
from node.chain.processor import ChainJobs, ChainObserver, Processor
from node.chain.registry import Addresses, RegistryError, load_addresses
from node.chain.signers import SignerCache, read_signer
from node.chain.subscription import Subscription
from node.chain.wallet import Wallet
from node.cluster import Cluster
from node.config import ChainConfig, ContainerConfig
from node.jobs.desk import DelegatedRequest
from node.jobs.errors import Unavailable

log = logging.getLogger(__name__)

RPC_TIMEOUT = 30.0


class ChainRuntime:
    def __init__(
        self,
        config: ChainConfig,
        containers: Sequence[ContainerConfig],
        jobs: ChainJobs,
        repository: ChainRepository,
        cluster: Cluster,
        tick: float | None = None,
        metrics: ChainObserver | None = None,
    ) -> None:
        assert config.enabled and config.rpc_url and config.registry_address and config.wallet.private_key
        # web3 logs every request and response at DEBUG: far too loud next to the node's own lines.
        if logging.getLogger("web3").level == logging.NOTSET:
            logging.getLogger("web3").setLevel(logging.INFO)
        self._config = config
        self._containers = containers
        self._jobs = jobs
        # How often the processor looks at the latest block: as often as the listener polls.
        self._tick = tick if tick is not None else config.snapshot_sync.sync_period
        self._metrics = metrics
        try:
            self.account: LocalAccount = Account.from_key(config.wallet.private_key.get_secret_value())
        except Exception:
            # Never echo the value: the message of the underlying error may contain it.
            raise ValueError("chain.wallet.private_key is not a valid 32-byte hex private key") from None
        self.w3 = AsyncWeb3(AsyncHTTPProvider(config.rpc_url, request_kwargs={"timeout": RPC_TIMEOUT}))
        self.repository = repository
        self._cluster = cluster
        self.leader: ChainLeader | None = None
        self._unservable: set[str] = set()  # delegated keys whose containers are gone: warned once
        self.lookup: ContainerLookup | None = None  # built off the event loop when the module starts
        self.guardian: ChainGuardian | None = None
        self.addresses: Addresses | None = None
        self.processor: Processor | None = None
        self._handler: DelegatedHandler | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- what the rest of the node sees -----------------------------------------

    @property
    def address(self) -> str:
        return str(self.account.address)

    @property
    def ready(self) -> bool:
        return self._handler is not None

    def status(self) -> tuple[str, int]:
        """(the node's address, deliveries under way) for /info."""
        return self.address, self.processor.pending if self.processor is not None else 0

    @property
    def role(self) -> Role:
        """This node's part in sending the wallet's transactions (standby until connected)."""
        return self.leader.role if self.leader is not None else Role.STANDBY

    async def accept(self, request: DelegatedRequest) -> None:
        """DelegatedSubscriptions.accept: 503 until connected to the chain."""
        if self._handler is None:
            raise Unavailable("Chain not ready", {})
        await self._handler.accept(request)

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._run_logged(), name="chain"))

    async def _run_logged(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("chain: the chain module stopped")

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.processor is not None:
            await self.processor.close()
        # Released last, once nothing of this node can send any more: a standby may take over now.
        if self.leader is not None:
            await self.leader.close()
        await self.w3.provider.disconnect()

    async def _connect(self) -> tuple[Addresses, int]:
        delay = 1.0
        while True:
            try:
                chain_id = int(await self.w3.eth.chain_id)
                addresses = await load_addresses(self.w3, self._config.registry_address or "")
                return addresses, chain_id
            except asyncio.CancelledError:
                raise
            except (RegistryError, ValueError) as error:
                log.error("chain: %s (check chain.registry_address); retrying in %gs", error, delay)
            except Exception as error:
                log.error(
                    "chain: cannot reach %s (%s: %s); retrying in %gs",
                    self._config.rpc_url,
                    type(error).__name__,
                    error,
                    delay,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _run(self) -> None:
        # Hashing every chain of container ids can take a second with many containers.
        self.lookup = await asyncio.to_thread(ContainerLookup, [container.id for container in self._containers])
        self.guardian = ChainGuardian(self._containers, self.lookup, self._config.wallet.payment_address)
        addresses, chain_id = await self._connect()
        self.addresses = addresses
        contracts = Contracts(self.w3, addresses)
        clock = BlockClock(self.w3)
        wallet = Wallet(
            self.w3,
            self.account,
            chain_id,
            self._config.wallet.max_gas_limit,
            self._config.wallet.allowed_sim_errors,
            self._config.wallet.payment_address,
        )
        leader = ChainLeader(
            lambda on_change: self._cluster.lease(lease_name(self.address), on_change),
            lambda: self._take_over(wallet, clock, processor),
        )
        processor = Processor(
            contracts,
            wallet,
            clock,
            self._jobs,
            self.repository,
            tick=self._tick,
            observer=self._metrics,
            gate=leader,
        )
        self.processor = processor
        self.leader = leader
        while True:
            try:
                # Every node tracks what was accepted, so that any of them can take over.
                await self._restore_delegated(processor)
                break
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.error("chain: reading the store failed (%s: %s); retrying", type(error).__name__, error)
                await asyncio.sleep(2.0)
        assert self.guardian is not None
        signers = SignerCache(lambda owner: read_signer(contracts.signer_of, owner))
        self._handler = DelegatedHandler(self.guardian, clock, contracts, signers, self.repository, processor, chain_id)
        listener = Listener(
            self.w3,
            contracts,
            self.guardian,
            processor,
            self._config.trail_head_blocks,
            self._config.snapshot_sync,
            observer=self._metrics,
        )
        log.info(
            "chain: connected (chain id %d, coordinator %s, node address %s, %d container chains known, node %s)",
            chain_id,
            addresses.coordinator,
            self.address,
            len(self.lookup or ()),
            self._cluster.node_id,
        )
        self._tasks.append(asyncio.create_task(leader.run_forever(), name="chain-leader"))
        self._tasks.append(asyncio.create_task(self._follow_store(processor, leader), name="chain-store"))
        self._tasks.append(asyncio.create_task(processor.run_forever(), name="chain-processor"))
        self._tasks.append(asyncio.create_task(listener.run_forever(), name="chain-listener"))

    async def _take_over(self, wallet: Wallet, clock: BlockClock, processor: Processor) -> None:
        """On gaining the wallet's lease: what today's restart recovery does, before any send."""
        await wallet.sync_nonce()
        await clock.refresh()
        await processor.recover()
        await self._restore_delegated(processor)

    async def _follow_store(self, processor: Processor, leader: ChainLeader) -> None:
        """The leader picks up delegated subscriptions that other nodes accepted and stored."""
        while True:
            await asyncio.sleep(self._cluster.renew_seconds)
            if not leader.may_deliver():
                continue
            try:
                await self._restore_delegated(processor)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.warning("chain: cannot read delegated subscriptions (%s: %s)", type(error).__name__, error)

    async def _restore_delegated(self, processor: Processor) -> None:
        """Delegated subscriptions in the store (accepted before a restart, or by another node) are tracked."""
        assert self.lookup is not None
        restored = 0
        for record in await self.repository.open_delegated():
            if processor.is_tracked(record.key) or record.key in self._unservable:
                continue
            try:
                sub = Subscription.from_wire(record.subscription)
            except (KeyError, ValueError, TypeError):
                self._unservable.add(record.key)
                continue
            containers = self.lookup.containers(sub.containers_hash)
            if not containers:
                self._unservable.add(record.key)
                log.warning(
                    "delegated subscription %s/%d: its containers are not configured on this node",
                    record.owner,
                    record.nonce,
                    extra={"subscription_id": record.key},
                )
                continue
            processor.track_delegated(record, sub, containers)
            restored += 1
        if restored:
            log.info("chain: resumed %d delegated subscriptions from the store", restored)
