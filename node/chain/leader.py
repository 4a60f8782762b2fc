"""One sender per wallet: the node holding the lease `chain:<wallet>` delivers, the others stand by.

Every node tracks subscriptions and accepts delegated ones; only the leader sends. When a
node gains the lease it first takes over (the runtime's `take_over`: sync the wallet's
nonce, finish or re-check the deliveries left open in the store, pick up delegated
subscriptions other nodes accepted) and only then may deliver. A node that loses the
lease stops at once; and right before each transaction it renews the lease and checks it
is still its own for `margin` more seconds (fencing), so a node paused past the lease time
never sends after another node took over.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable

from node.leases import Lease

log = logging.getLogger(__name__)


class Role(str, enum.Enum):
    STANDBY = "standby"
    TAKING_OVER = "taking_over"
    LEADER = "leader"


def lease_name(wallet: str) -> str:
    return f"chain:{wallet.lower()}"


class ChainLeader:
    def __init__(
        self,
        make_lease: Callable[[Callable[[bool], Awaitable[None]]], Lease],
        take_over: Callable[[], Awaitable[None]],
        *,
        retry_delay: float = 1.0,
    ) -> None:
        self._lease = make_lease(self._changed)
        self._take_over = take_over
        self._retry_delay = retry_delay
        self._role = Role.STANDBY
        self._takeover: asyncio.Task[None] | None = None
        # Fencing margin: after renewing, the lease must be ours for this long still, so the
        # transaction is handed to the chain well before another node could take over.
        self.margin = self._lease.ttl / 2

    @property
    def role(self) -> Role:
        if self._role is Role.LEADER and not self._lease.held:
            return Role.STANDBY  # the lease ran out before the loop noticed
        return self._role

    def may_deliver(self) -> bool:
        return self.role is Role.LEADER

    async def fence(self) -> bool:
        """Right before a send: True only if this node still leads, with margin."""
        return self._role is Role.LEADER and await self._lease.confirm(self.margin)

    async def _changed(self, held: bool) -> None:
        if held:
            log.info("chain: this node now holds %s; taking over deliveries", self._lease.name)
            self._role = Role.TAKING_OVER
            # Not awaited here: the renewal loop must keep renewing while recovery reads the chain.
            self._takeover = asyncio.create_task(self._run_take_over(), name="chain-takeover")
        else:
            log.warning("chain: this node lost %s; it stops sending (standby)", self._lease.name)
            self._role = Role.STANDBY
            await self._cancel_take_over()

    async def _run_take_over(self) -> None:
        while True:
            try:
                await self._take_over()
                break
            except asyncio.CancelledError:
                raise
            except Exception as error:
                log.error("chain: taking over failed (%s: %s); retrying", type(error).__name__, error)
                await asyncio.sleep(self._retry_delay)
        if self._role is Role.TAKING_OVER:
            self._role = Role.LEADER
            log.info("chain: this node is the leader for %s", self._lease.name)

    async def _cancel_take_over(self) -> None:
        task, self._takeover = self._takeover, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def step(self) -> None:
        await self._lease.step()

    async def run_forever(self) -> None:
        await self._lease.run_forever()

    async def close(self) -> None:
        """Stop leading and release the lease, so a standby takes over without waiting for it to expire."""
        self._role = Role.STANDBY
        await self._cancel_take_over()
        await self._lease.release()
