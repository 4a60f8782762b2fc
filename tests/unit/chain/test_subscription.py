import pytest

from node.chain.subscription import UINT32_MAX, ZERO_ADDRESS, NotActive, Subscription

OWNER = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
HASH = bytes.fromhex("e6bc11afcedb3f26d7fb181f4c6dd2e98781d79f965a4777058412b58f788ec8")


def sub(active_at: int = 1000, period: int = 0, frequency: int = 1, **kw: object) -> Subscription:
    fields = dict(
        id=1, owner=OWNER, active_at=active_at, period=period, frequency=frequency, redundancy=1,
        containers_hash=HASH, lazy=False, verifier=ZERO_ADDRESS, payment_amount=0,
        payment_token=ZERO_ADDRESS, wallet=ZERO_ADDRESS,
    )  # fmt: skip
    fields.update(kw)
    return Subscription(**fields)  # type: ignore[arg-type]


def test_active_from_active_at_inclusive_like_the_contract() -> None:
    s = sub(active_at=1000)
    assert not s.active(999)
    assert s.active(1000)  # block.timestamp >= activeAt (the reference node used a strict >)


def test_callback_is_always_interval_one() -> None:
    s = sub(active_at=1000, period=0)
    assert s.is_callback
    assert s.interval(1000) == 1 and s.interval(10**9) == 1


def test_recurring_intervals_follow_chain_time() -> None:
    s = sub(active_at=1000, period=60, frequency=3)
    assert [s.interval(t) for t in (1000, 1059, 1060, 1119, 1120, 1180)] == [1, 1, 2, 2, 3, 4]
    assert s.on_last_interval(1120) and not s.past_last_interval(1120)
    assert s.past_last_interval(1180)


def test_interval_of_an_inactive_subscription_raises() -> None:
    with pytest.raises(NotActive):
        sub(active_at=1000).interval(999)


def test_cancelled_is_never_active() -> None:
    s = sub(active_at=UINT32_MAX)
    assert s.cancelled and not s.active(UINT32_MAX) and not s.active(2**40)


def test_from_chain_tuple_and_back() -> None:
    fields = (OWNER.lower(), 5, 10, 2, 3, HASH, False, ZERO_ADDRESS, 7, ZERO_ADDRESS, ZERO_ADDRESS)
    s = Subscription.from_chain(9, fields)
    assert s.id == 9 and s.owner == OWNER and s.redundancy == 3 and s.payment_amount == 7
    assert s.to_chain() == (OWNER, 5, 10, 2, 3, HASH, False, ZERO_ADDRESS, 7, ZERO_ADDRESS, ZERO_ADDRESS)
    assert s.provides_payment and not s.requires_proof and s.exists


def test_empty_slot_does_not_exist() -> None:
    empty = (ZERO_ADDRESS, 0, 0, 0, 0, b"\0" * 32, False, ZERO_ADDRESS, 0, ZERO_ADDRESS, ZERO_ADDRESS)
    s = Subscription.from_chain(4, empty)
    assert not s.exists


def test_from_wire_accepts_any_hash_and_address_case() -> None:
    body = {
        "owner": OWNER.lower(), "active_at": 0, "period": 3, "frequency": 2, "redundancy": 2,
        "containers": HASH.hex().upper(), "lazy": False, "verifier": ZERO_ADDRESS, "payment_amount": 2**255,
        "payment_token": ZERO_ADDRESS, "wallet": ZERO_ADDRESS,
    }  # fmt: skip
    s = Subscription.from_wire(body)
    assert s.id is None and s.owner == OWNER and s.containers_hash == HASH and s.payment_amount == 2**255
    assert s.with_id(12).id == 12 and s.with_id(12).to_chain() == s.to_chain()
