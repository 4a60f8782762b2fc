from ipaddress import ip_network

import pytest

from node.api.client_ip import normalise, resolve
from node.jobs.errors import InvalidRequest


def test_ipv4_mapped_addresses_are_normalised() -> None:
    assert normalise("::ffff:127.0.0.1") == "127.0.0.1"
    assert normalise("::1") == "::1"
    assert normalise("10.0.0.1") == "10.0.0.1"


def test_forwarded_for_is_honoured_only_from_trusted_proxies() -> None:
    trusted = (ip_network("10.0.0.0/8"),)
    assert resolve("10.0.0.5", "203.0.113.9", trusted) == "203.0.113.9"
    assert resolve("198.51.100.1", "203.0.113.9", trusted) == "198.51.100.1"  # spoof attempt
    assert resolve("10.0.0.5", "203.0.113.9", ()) == "10.0.0.5"
    # A chain of trusted proxies: the first untrusted hop from the right wins.
    assert resolve("10.0.0.5", "1.1.1.1, 203.0.113.9, 10.0.0.7", trusted) == "203.0.113.9"
    assert resolve("::ffff:10.0.0.5", "::ffff:203.0.113.9", trusted) == "203.0.113.9"
    assert resolve("10.0.0.5", "garbage", trusted) == "10.0.0.5"


def test_missing_peer_is_a_clear_error() -> None:
    with pytest.raises(InvalidRequest, match="Could not get client IP address"):
        resolve(None, None, ())
