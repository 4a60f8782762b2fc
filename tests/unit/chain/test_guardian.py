from typing import Any

import pytest

from node.chain.containers_lookup import ContainerLookup, containers_hash
from node.chain.guardian import ChainGuardian
from node.chain.subscription import ZERO_ADDRESS, Subscription
from node.config import ContainerConfig
from node.jobs.errors import ErrorKind, Rejected

OWNER = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
OTHER = "0x" + "ab" * 20
TOKEN = "0x" + "cd" * 20
VERIFIER = "0x" + "ef" * 20
NOPE = containers_hash(["nope"])


def guardian(*containers: ContainerConfig, payment_address: str | None = None) -> ChainGuardian:
    return ChainGuardian(containers, ContainerLookup([c.id for c in containers]), payment_address)


def c(id: str, **kw: Any) -> ContainerConfig:
    return ContainerConfig(id=id, url="http://127.0.0.1:1", **kw)


def sub(containers: list[str], owner: str = OWNER, **kw: Any) -> Subscription:
    fields: dict[str, Any] = dict(
        id=1, owner=owner, active_at=0, period=0, frequency=1, redundancy=1,
        containers_hash=containers_hash(containers), lazy=False, verifier=ZERO_ADDRESS, payment_amount=0,
        payment_token=ZERO_ADDRESS, wallet=ZERO_ADDRESS,
    )  # fmt: skip
    fields.update(kw)
    return Subscription(**fields)


def refusal(g: ChainGuardian, s: Subscription) -> str | None:
    _, r = g.check_onchain(s)
    return r.error if r else None


def test_onchain_rules_in_order() -> None:
    g = guardian(
        c("open"),
        c("inner", external=False),
        c("mine", allowed_addresses=(OWNER.lower(),)),
        c("prover", generates_proofs=True),
    )
    assert g.check_onchain(sub(["open", "inner"])) == (["open", "inner"], None)
    assert refusal(g, sub(["nope"])) == "Container-set not supported"
    assert refusal(g, sub(["inner", "open"])) == "First container must be external"
    assert refusal(g, sub(["mine"], owner=OTHER)) == "Container not allowed for address"
    assert refusal(g, sub(["open", "mine"])) is None  # allow-lists compare case-insensitively
    assert refusal(g, sub(["open"], verifier=VERIFIER)) == "Container does not generate proof"
    assert refusal(g, sub(["open", "prover"], verifier=VERIFIER)) is None


def test_payments() -> None:
    paid = c("paid", accepted_payments={ZERO_ADDRESS: 100, TOKEN: 5})
    also = c("also", accepted_payments={ZERO_ADDRESS: 50})
    free = c("free")
    no_wallet = guardian(paid, also, free)
    assert refusal(no_wallet, sub(["free"], payment_amount=1)) == "Node does not accept payments"
    g = guardian(paid, also, free, payment_address=OTHER)
    assert refusal(g, sub(["free"])) is None
    assert refusal(g, sub(["paid"])) == "Insufficient payment"
    assert refusal(g, sub(["paid"], payment_amount=100)) is None
    assert refusal(g, sub(["paid", "also"], payment_amount=149)) == "Insufficient payment"
    assert refusal(g, sub(["paid", "also"], payment_amount=150)) is None
    assert refusal(g, sub(["also"], payment_amount=10**6, payment_token=TOKEN)) == "Payment token not accepted"
    assert refusal(g, sub(["paid"], payment_amount=5, payment_token=TOKEN.upper().replace("0X", "0x"))) is None


def test_delegated_rules_raise_405_with_json_safe_params() -> None:
    g = guardian(
        c("open"),
        c("inner", external=False),
        c("picky", allowed_delegate_addresses=(OTHER,)),
        c("prover", generates_proofs=True),
    )
    assert g.check_delegated(sub(["open"]), expiry=101, now=100) == ["open"]
    cases = [
        (sub(["open"]), 100, "Signature expired", {"expiry": 100, "chain_time": 100}),
        (sub(["nope"]), 101, "Container-set not supported", {"containers_hash": "0x" + NOPE.hex()}),
        (sub(["inner"]), 101, "First container must be external", {"first_container": "inner"}),
        (sub(["open"], verifier=VERIFIER), 101, "Container does not generate proof", {"container": "open"}),
        (sub(["picky"]), 101, "Container not allowed for address", {"container": "picky", "address": OWNER}),
    ]
    for s, expiry, error, params in cases:
        with pytest.raises(Rejected) as caught:
            g.check_delegated(s, expiry=expiry, now=100)
        assert caught.value.kind is ErrorKind.REJECTED  # the reference's 405
        assert (caught.value.message, caught.value.params) == (error, params)


def test_delegated_ignores_the_onchain_allow_list_and_vice_versa() -> None:
    g = guardian(c("x", allowed_addresses=(OTHER,), allowed_delegate_addresses=(OWNER,)))
    assert g.check_delegated(sub(["x"]), expiry=2, now=1) == ["x"]
    assert refusal(g, sub(["x"])) == "Container not allowed for address"
