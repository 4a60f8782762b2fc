"""Client identity: any peer and any X-Forwarded-For give one normalised address
(the peer, or a hop the trusted proxies reported), never an exception."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from node.api.client_ip import in_networks, normalise, resolve
from node.config import ServerConfig
from node.jobs.errors import InvalidRequest
from tests.support.strategies import EXAMPLES

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
addresses = st.one_of(
    ipv4, ipv6, ipv4.map(lambda ip: f"::ffff:{ip}"), st.sampled_from(["127.0.0.1", "::1", "10.0.0.7", "fe80::1%eth0"])
)
hops = st.one_of(addresses, st.text(max_size=15), st.just(" "))
headers = st.one_of(st.none(), st.lists(hops, max_size=5).map(", ".join), st.text(max_size=40))
trusted_sets = st.sampled_from([(), ("127.0.0.0/8",), ("10.0.0.0/8", "::1/128"), ("0.0.0.0/0",), ("::/0", "0.0.0.0/0")])


@settings(max_examples=EXAMPLES * 2, deadline=None)
@given(st.one_of(addresses, st.none(), st.just("")), headers, trusted_sets)
def test_resolve_gives_one_normalised_address(
    peer: str | None, forwarded: str | None, trusted: tuple[str, ...]
) -> None:
    # Parsed as the node parses them.
    networks = ServerConfig.model_validate({"trusted_proxies": trusted}).trusted_proxies
    try:
        ip = resolve(peer, forwarded, networks)
    except InvalidRequest:
        assert not peer
        return
    assert peer
    address = ipaddress.ip_address(ip)  # always an address, never header garbage
    assert not (isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped), ip
    if not in_networks(normalise(peer), networks) or not forwarded:
        assert ip == normalise(peer)  # nobody we trust vouched for another address
    else:
        reported = {normalise(hop.strip()) for hop in forwarded.split(",")}
        assert ip == normalise(peer) or ip in reported
