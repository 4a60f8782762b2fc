"""What the guardian knows about a container: the domain's view of its config.

Built by the composition root from the config model, so the domain never reads
(or imports) the operator's config file format.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ContainerPolicy:
    id: str
    external: bool = True  # may start a chain of containers
    generates_proofs: bool = False
    allowed_ips: tuple[IPNetwork, ...] = ()  # empty: every client
