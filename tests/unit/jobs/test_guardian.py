from ipaddress import ip_network

import pytest

from node.jobs.errors import ErrorKind, Rejected
from node.jobs.guardian import Guardian, ip_allowed
from node.jobs.policy import ContainerPolicy


def guardian() -> Guardian:
    return Guardian(
        [
            ContainerPolicy("a"),
            ContainerPolicy("inner", external=False),
            ContainerPolicy("prover", generates_proofs=True),
            ContainerPolicy("lan", allowed_ips=(ip_network("10.0.0.0/8"), ip_network("192.168.1.7"))),
        ]
    )


def rejection(containers: list[str], proof: bool = False, ip: str = "127.0.0.1") -> tuple[str, dict]:
    with pytest.raises(Rejected) as caught:
        guardian().check_offchain(containers, proof, ip)
    assert caught.value.kind is ErrorKind.REJECTED  # the reference's 405
    return caught.value.message, caught.value.params or {}


def test_catalogue_messages_and_params() -> None:
    assert rejection([]) == ("No containers specified", {})
    assert rejection(["a", "nope"]) == ("Container not supported", {"container": "nope"})
    assert rejection(["inner", "a"]) == ("First container must be external", {"first_container": "inner"})
    assert rejection(["a"], proof=True) == ("Container does not generate proof", {"container": "a"})
    assert rejection(["a", "lan"], ip="8.8.8.8") == (
        "Container not allowed for address",
        {"container": "lan", "address": "8.8.8.8"},
    )


def test_check_order_follows_the_reference() -> None:
    # Unsupported is reported before "first external", and that before proof and IP.
    assert rejection(["inner", "nope"], proof=True)[0] == "Container not supported"
    assert rejection(["inner", "lan"], proof=True, ip="8.8.8.8")[0] == "First container must be external"
    assert rejection(["lan"], proof=True, ip="8.8.8.8")[0] == "Container does not generate proof"


def test_accepted_chains() -> None:
    g = guardian()
    g.check_offchain(["a", "inner"], False, "1.2.3.4")
    g.check_offchain(["a", "prover"], True, "1.2.3.4")
    g.check_offchain(["lan"], False, "10.20.30.40")
    g.check_offchain(["lan"], False, "192.168.1.7")


def test_ip_allowed() -> None:
    assert ip_allowed("anything", ())
    ten = (ip_network("10.0.0.0/8"),)
    assert ip_allowed("10.1.2.3", ten)
    assert not ip_allowed("11.1.2.3", ten)
    assert not ip_allowed("not-an-ip", ten)
    assert ip_allowed("::1", (ip_network("::1/128"),))
