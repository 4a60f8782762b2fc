from eth_account import Account
from eth_account.messages import encode_typed_data

from node.chain.eip712 import recover_signer, typed_data
from node.chain.subscription import Subscription
from tests.support.vectors import delegated_body

# The body captured from the real client (client-contract.md §5.3).
BODY = delegated_body()
COORDINATOR = "0x1Fbdb2315678aFecb369F032D93f642f64140AA3"
SIGNER = "0x5ce9454909639D2D17A3F753ce7d93fa0b9aB12E"


def recover(body: dict, chain_id: int = 31337, coordinator: str = COORDINATOR) -> str:
    sig = body["signature"]
    sub = Subscription.from_wire(body["subscription"])
    return recover_signer(sub, sig["nonce"], sig["expiry"], sig["v"], sig["r"], sig["s"], chain_id, coordinator)


def test_recovers_the_signer_of_the_real_clients_body() -> None:
    assert recover(BODY) == SIGNER


def test_another_chain_or_coordinator_gives_another_address() -> None:
    assert recover(BODY, chain_id=1) != SIGNER
    assert recover(BODY, coordinator="0x" + "11" * 20) != SIGNER


def test_any_changed_field_changes_the_signer() -> None:
    for field, value in (("frequency", 3), ("owner", "0x" + "22" * 20), ("lazy", True), ("payment_amount", 1)):
        changed = {**BODY, "subscription": {**BODY["subscription"], field: value}}
        assert recover(changed) != SIGNER, field


def test_round_trip_with_eth_account() -> None:
    account = Account.create()
    sub = Subscription.from_wire(BODY["subscription"])
    signed = Account.sign_message(encode_typed_data(full_message=typed_data(sub, 1, 99, 5, COORDINATOR)), account.key)
    assert recover_signer(sub, 1, 99, signed.v, signed.r, signed.s, 5, COORDINATOR) == account.address


def test_malformed_signature_is_a_value_error() -> None:
    import pytest

    sub = Subscription.from_wire(BODY["subscription"])
    with pytest.raises(ValueError):
        recover_signer(sub, 7, 2000000000, 99, 1, 1, 31337, COORDINATOR)
