"""Who may run what: the reference node's guardian rules for off-chain jobs.

Check order and messages follow the reference exactly (client-contract.md §6),
because clients match on them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from node.jobs.errors import Rejected
from node.jobs.policy import ContainerPolicy, IPNetwork


def ip_allowed(ip: str, networks: tuple[IPNetwork, ...]) -> bool:
    """Empty allow-lists allow everyone."""
    if not networks:
        return True
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in network for network in networks)


class Guardian:
    def __init__(self, containers: Sequence[ContainerPolicy]) -> None:
        self._containers = {container.id: container for container in containers}

    def check_offchain(self, containers: Sequence[str], requires_proof: bool, client_ip: str) -> None:
        """Raise Rejected if this client may not run this chain of containers."""
        if not containers:
            raise Rejected("No containers specified", {})
        for container_id in containers:
            if container_id not in self._containers:
                raise Rejected("Container not supported", {"container": container_id})
        first = self._containers[containers[0]]
        if not first.external:
            raise Rejected("First container must be external", {"first_container": first.id})
        last = self._containers[containers[-1]]
        if requires_proof and not last.generates_proofs:
            raise Rejected("Container does not generate proof", {"container": last.id})
        for container_id in containers:
            if not ip_allowed(client_ip, self._containers[container_id].allowed_ips):
                raise Rejected(
                    "Container not allowed for address",
                    {"container": container_id, "address": client_ip},
                )
