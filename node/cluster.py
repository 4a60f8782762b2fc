"""This node among others on one store: its heartbeat, and who is alive and holds which lease.

Each node holds the lease `node:<id>` (nobody else takes it) and renews it, so the live
`node:` leases are the nodes alive. The other live leases are roles, for example
`chain:<wallet>` held by the node that sends that wallet's transactions. /info and
/metrics read the last snapshot; it is refreshed on every heartbeat, never per request.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from node.leases import Lease, LeaseStore

log = logging.getLogger(__name__)

NODE_PREFIX = "node:"


def default_node_id() -> str:
    # The pid and a random tail tell apart two nodes on one host, and a node from its restart.
    return f"{socket.gethostname()[:64] or 'node'}-{os.getpid()}-{secrets.token_hex(2)}"


@dataclass(frozen=True, slots=True)
class ClusterView:
    node_id: str
    nodes: tuple[str, ...] = ()  # ids of the nodes alive (this one included once its heartbeat is stored)
    roles: dict[str, str] = field(default_factory=dict)  # lease name -> holder

    def as_json(self) -> dict[str, object]:
        return {
            "node_id": self.node_id,
            "nodes_alive": len(self.nodes),
            "nodes": list(self.nodes),
            "roles": [{"lease": name, "holder": holder} for name, holder in sorted(self.roles.items())],
        }


class Cluster:
    def __init__(self, store: LeaseStore, node_id: str, lease_seconds: float, renew_seconds: float) -> None:
        self.store = store
        self.node_id = node_id
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self._heartbeat = self.lease(NODE_PREFIX + node_id)
        self._view = ClusterView(node_id)
        self._task: asyncio.Task[None] | None = None

    def lease(self, name: str, on_change: Callable[[bool], Awaitable[None]] | None = None) -> Lease:
        """A lease held by this node, timed like every other one."""
        return Lease(self.store, name, self.node_id, self.lease_seconds, self.renew_seconds, on_change)

    @property
    def heartbeat(self) -> Lease:
        """`node:<id>`: on a shared store, the pending jobs this node owns are its own while it lives."""
        return self._heartbeat

    @property
    def view(self) -> ClusterView:
        return self._view

    async def beat(self) -> None:
        await self._heartbeat.step()
        try:
            live = await self.store.live("")
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.warning("cluster: cannot read the leases (%s: %s)", type(error).__name__, error)
            return
        nodes = tuple(info.holder for info in live if info.name.startswith(NODE_PREFIX))
        roles = {info.name: info.holder for info in live if not info.name.startswith(NODE_PREFIX)}
        if nodes != self._view.nodes:
            log.info("cluster: %d node(s) alive: %s", len(nodes), ", ".join(nodes))
        self._view = ClusterView(self.node_id, nodes, roles)

    async def _run(self) -> None:
        while True:
            await self.beat()
            await asyncio.sleep(self.renew_seconds)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="cluster-heartbeat")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._heartbeat.release()
