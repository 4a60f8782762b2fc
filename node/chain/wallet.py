"""Simulating and sending the node's transactions.

One account, one lock: nonces are assigned, transactions signed, recorded (through
the caller's `on_signed`, before they leave the node) and broadcast one at a time,
with a local nonce counter that is resynchronised from the chain when the chain
disagrees. Reverts are classified by selector (reverts.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from eth_account.signers.local import LocalAccount
from web3 import AsyncWeb3
from web3.exceptions import TransactionNotFound, Web3RPCError

from node.chain.reverts import Revert, as_revert
from node.chain.subscription import ZERO_ADDRESS

log = logging.getLogger(__name__)

GAS_MARGIN = 1.25
_NONCE_ERRORS = ("nonce too low", "nonce too high", "invalid nonce", "replacement transaction underpriced")


class SimulationFailed(Exception):
    def __init__(self, revert: Revert) -> None:
        super().__init__(revert.describe())
        self.revert = revert


class SendFailed(Exception):
    pass


class Wallet:
    def __init__(
        self,
        w3: AsyncWeb3,
        account: LocalAccount,
        chain_id: int,
        max_gas_limit: int,
        allowed_sim_errors: Sequence[str] = (),
        payment_address: str | None = None,
    ) -> None:
        self._w3 = w3
        self._account = account
        self._chain_id = chain_id
        self._max_gas_limit = max_gas_limit
        self._allowed = tuple(text.lower() for text in allowed_sim_errors if text)
        self.node_wallet = payment_address or ZERO_ADDRESS
        self._lock = asyncio.Lock()
        self._nonce: int | None = None

    @property
    def address(self) -> str:
        return str(self._account.address)

    async def sync_nonce(self) -> int:
        self._nonce = int(await self._w3.eth.get_transaction_count(self._account.address, "pending"))
        return self._nonce

    # -- simulation -------------------------------------------------------------

    def _tolerated(self, revert: Revert) -> bool:
        text = f"{revert.name or ''} {revert.selector or ''} {revert.message}".lower()
        return any(allowed in text for allowed in self._allowed)

    async def simulate(self, fn: Any, estimate: bool = True, extra: dict[str, Any] | None = None) -> int:
        """eth_call `fn` from the node's account; returns the gas limit to send it with.

        Raises SimulationFailed for a revert (unless `allowed_sim_errors` tolerates it,
        then the gas limit is `max_gas_limit`); other errors (RPC down...) propagate.
        """
        params = {"from": self._account.address}
        try:
            await fn.call(params)
            if not estimate:
                return self._max_gas_limit
            gas = int(await fn.estimate_gas(params))
        except Exception as error:
            revert = as_revert(error)
            if revert is None:
                raise
            if self._tolerated(revert):
                log.info("simulation reverted with %s, tolerated by allowed_sim_errors", revert.describe(), extra=extra)
                return self._max_gas_limit
            raise SimulationFailed(revert) from None
        return min(int(gas * GAS_MARGIN) + 10_000, self._max_gas_limit)

    # -- sending ------------------------------------------------------------------

    async def send(
        self,
        fn: Any,
        gas: int,
        on_signed: Callable[[str, int], Awaitable[None]],
        extra: dict[str, Any] | None = None,
    ) -> str:
        """Sign and broadcast `fn`; `on_signed(tx_hash, nonce)` runs (and must succeed) first."""
        async with self._lock:
            if self._nonce is None:
                await self.sync_nonce()
            for attempt in range(2):
                assert self._nonce is not None
                nonce = self._nonce
                tx = await fn.build_transaction(
                    {"from": self._account.address, "nonce": nonce, "gas": gas, "chainId": self._chain_id}
                )
                signed = self._account.sign_transaction(tx)
                tx_hash = signed.hash.to_0x_hex()
                await on_signed(tx_hash, nonce)
                try:
                    await self._w3.eth.send_raw_transaction(signed.raw_transaction)
                except Web3RPCError as error:
                    message = str(error).lower()
                    if "already known" in message:
                        pass  # the chain has it already (a retried request): fine
                    elif attempt == 0 and any(text in message for text in _NONCE_ERRORS):
                        log.warning("nonce %d refused (%s); resynchronising from the chain", nonce, error, extra=extra)
                        await self.sync_nonce()
                        continue
                    else:
                        raise SendFailed(str(error)) from None
                except Exception:
                    # The request may or may not have reached the chain: ask it.
                    if not await self.is_known(tx_hash):
                        raise
                self._nonce = nonce + 1
                return tx_hash
            raise SendFailed("nonce kept being refused")

    async def is_known(self, tx_hash: str) -> bool:
        try:
            await self._w3.eth.get_transaction(tx_hash)  # type: ignore[arg-type]
        except TransactionNotFound:
            return False
        return True

    async def wait(
        self,
        tx_hash: str,
        poll: float = 0.1,
        unknown_grace: float = 3.0,
        warn_after: float = 120.0,
        extra: dict[str, Any] | None = None,
    ) -> int | None:
        """The mined status (1 or 0) of `tx_hash`, or None once the chain no longer knows it."""
        started = time.monotonic()
        unknown_since: float | None = None
        warned = False
        while True:
            try:
                receipt = await self._w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
                return int(receipt["status"])
            except TransactionNotFound:
                pass
            if await self.is_known(tx_hash):
                unknown_since = None
            else:
                unknown_since = unknown_since or time.monotonic()
                if time.monotonic() - unknown_since >= unknown_grace:
                    async with self._lock:
                        await self.sync_nonce()  # its nonce may be free again
                    return None
            if not warned and time.monotonic() - started > warn_after:
                warned = True
                log.warning("transaction %s not mined after %gs; still waiting", tx_hash, warn_after, extra=extra)
            await asyncio.sleep(poll)
            poll = min(poll * 1.5, 2.0)  # quick for a dev chain, gentle on a real RPC while a block is awaited
