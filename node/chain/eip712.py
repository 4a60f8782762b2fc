"""EIP-712 typed data of a delegated subscription, and recovering who signed it.

Domain and types are those of the Infernet EIP712Coordinator (chain.md §6,
client-contract.md §5.2): name "InfernetCoordinator", version "1", the chain id
and the coordinator's address, no salt.
"""

from __future__ import annotations

from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import to_checksum_address

from node.chain.abi import SUBSCRIPTION_FIELDS
from node.chain.subscription import Subscription

# secp256k1 order / 2: a larger s is the malleable twin of a valid signature.
HALF_CURVE_ORDER = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0

DOMAIN_NAME = "InfernetCoordinator"
DOMAIN_VERSION = "1"

_TYPES = {
    "EIP712Domain": [
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ],
    "DelegateSubscription": [
        {"name": "nonce", "type": "uint32"},
        {"name": "expiry", "type": "uint32"},
        {"name": "sub", "type": "Subscription"},
    ],
    "Subscription": [{"name": name, "type": type_} for name, type_ in SUBSCRIPTION_FIELDS],
}


def typed_data(sub: Subscription, nonce: int, expiry: int, chain_id: int, coordinator: str) -> dict[str, Any]:
    message_sub = dict(zip((name for name, _ in SUBSCRIPTION_FIELDS), sub.to_chain(), strict=True))
    return {
        "types": _TYPES,
        "primaryType": "DelegateSubscription",
        "domain": {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": chain_id,
            "verifyingContract": to_checksum_address(coordinator),
        },
        "message": {"nonce": nonce, "expiry": expiry, "sub": message_sub},
    }


def recover_signer(
    sub: Subscription, nonce: int, expiry: int, v: int, r: int, s: int, chain_id: int, coordinator: str
) -> str:
    """The address that signed this delegated subscription (raises ValueError on a malformed signature).

    As on chain (ecrecover), only v of 27 or 28 and s in the lower half of the curve order count.
    """
    if v not in (27, 28):
        raise ValueError(f"unrecoverable signature: v must be 27 or 28, not {v}")
    if not 0 < s <= HALF_CURVE_ORDER:
        raise ValueError("unrecoverable signature: s is not in the lower half of the curve order")
    message = encode_typed_data(full_message=typed_data(sub, nonce, expiry, chain_id, coordinator))
    try:
        return str(Account.recover_message(message, vrs=(v, r, s)))
    except Exception as error:  # eth-keys raises several types for bad signatures
        raise ValueError(f"unrecoverable signature: {error}") from None
