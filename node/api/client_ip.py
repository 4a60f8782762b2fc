"""Who is asking: the client IP that jobs are keyed by."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from aiohttp import web

from node.jobs.errors import InvalidRequest
from node.jobs.policy import IPNetwork


@lru_cache(maxsize=4096)  # every request parses its peer address; the same few repeat
def normalise(ip: str) -> str:
    """IPv4-mapped IPv6 (::ffff:1.2.3.4, from dual-stack sockets) becomes 1.2.3.4."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(address)


def in_networks(ip: str, networks: tuple[IPNetwork, ...]) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in network for network in networks)


def resolve(peer: str | None, forwarded_for: str | None, trusted: tuple[IPNetwork, ...]) -> str:
    """The peer, or, when the peer is a trusted proxy, the first untrusted hop of X-Forwarded-For."""
    if not peer:
        raise InvalidRequest("Could not get client IP address")
    ip = normalise(peer)
    if not trusted or not forwarded_for:
        return ip
    if not in_networks(ip, trusted):
        return ip
    # Walk from the nearest hop back; proxies we trust may be chained.
    for hop in reversed([part.strip() for part in forwarded_for.split(",") if part.strip()]):
        hop = normalise(hop)
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return ip  # garbage in the header: trust only what we saw
        if not in_networks(hop, trusted):
            return hop
        ip = hop
    return ip


CLIENT_IP_TRUSTED = web.AppKey("trusted_proxies", tuple)
_CLIENT_IP = web.RequestKey("client_ip", str)


def client_ip(request: web.Request) -> str:
    cached = request.get(_CLIENT_IP)
    if cached is not None:
        return cached
    ip = resolve(request.remote, request.headers.get("X-Forwarded-For"), request.app[CLIENT_IP_TRUSTED])
    request[_CLIENT_IP] = ip
    return ip
