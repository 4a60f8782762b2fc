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
from sqlalchemy.ext.asyncio import AsyncEngine
from web3 import AsyncHTTPProvider, AsyncWeb3

from node.chain.containers_lookup import ContainerLookup
from node.chain.contracts import BlockClock, Contracts
from node.chain.delegated import DelegatedHandler
from node.chain.guardian import ChainGuardian
from node.chain.listener import Listener
from node.chain.processor import ChainJobs, ChainObserver, Processor
from node.chain.registry import Addresses, RegistryError, load_addresses
from node.chain.signers import SignerCache, read_signer
from node.chain.subscription import Subscription
from node.chain.wallet import Wallet
from node.config import ChainConfig, ContainerConfig
from node.jobs.desk import DelegatedRequest
from node.jobs.errors import Unavailable
from node.store.chain_repository import SqlChainRepository

log = logging.getLogger(__name__)

RPC_TIMEOUT = 30.0


class ChainRuntime:
    def __init__(
        self,
        config: ChainConfig,
        containers: Sequence[ContainerConfig],
        jobs: ChainJobs,
        engine: AsyncEngine,
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
        self.repository = SqlChainRepository(engine)
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
        processor = Processor(
            contracts,
            wallet,
            clock,
            self._jobs,
            self.repository,
            tick=self._tick,
            observer=self._metrics,
        )
        self.processor = processor
        while True:
            try:
                await wallet.sync_nonce()
                await clock.refresh()
                await processor.recover()
                await self._restore_delegated(processor)
                break
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.error("chain: recovery failed (%s: %s); retrying", type(error).__name__, error)
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
            "chain: connected (chain id %d, coordinator %s, node address %s, %d container chains known)",
            chain_id,
            addresses.coordinator,
            self.address,
            len(self.lookup or ()),
        )
        self._tasks.append(asyncio.create_task(processor.run_forever(), name="chain-processor"))
        self._tasks.append(asyncio.create_task(listener.run_forever(), name="chain-listener"))

    async def _restore_delegated(self, processor: Processor) -> None:
        """Delegated subscriptions accepted before a restart are tracked again."""
        assert self.lookup is not None
        records = await self.repository.open_delegated()
        for record in records:
            try:
                sub = Subscription.from_wire(record.subscription)
            except (KeyError, ValueError, TypeError):
                continue
            containers = self.lookup.containers(sub.containers_hash)
            if not containers:
                log.warning(
                    "delegated subscription %s/%d: its containers are no longer configured",
                    record.owner,
                    record.nonce,
                    extra={"subscription_id": record.key},
                )
                continue
            processor.track_delegated(record, sub, containers)
        if records:
            log.info("chain: resumed %d delegated subscriptions", len(records))


