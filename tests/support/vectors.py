"""Test vectors captured from the real infernet-client 1.4.0 (client-contract.md §5.3)."""

from __future__ import annotations

import copy
from typing import Any

# Signed with this key, for chain id 31337 and this coordinator.
CLIENT_KEY = "0xb25c7db31feed9122727bf0939dc769a96564b2de4c4726d035b36ecf1e5b364"
CLIENT_SIGNER = "0x5ce9454909639D2D17A3F753ce7d93fa0b9aB12E"
CLIENT_COORDINATOR = "0x1Fbdb2315678aFecb369F032D93f642f64140AA3"
CLIENT_CHAIN_ID = 31337

_DELEGATED_BODY: dict[str, Any] = {
    "signature": {
        "nonce": 7,
        "expiry": 2000000000,
        "v": 28,
        "r": 45484533188921605635093505132650746807889623049579449762910591704467399622542,
        "s": 8031796271023499089945500144567262104186225908379306776818810081937677686089,
    },
    "subscription": {
        "owner": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
        "active_at": 0,
        "period": 3,
        "frequency": 2,
        "redundancy": 2,
        "containers": "0xe6bc11afcedb3f26d7fb181f4c6dd2e98781d79f965a4777058412b58f788ec8",
        "lazy": False,
        "verifier": "0x0000000000000000000000000000000000000000",
        "payment_amount": 0,
        "payment_token": "0x0000000000000000000000000000000000000000",
        "wallet": "0x0000000000000000000000000000000000000000",
    },
    "data": {"input": "hi"},
}


def delegated_body() -> dict[str, Any]:
    """A fresh copy of the captured delegated-subscription body, safe to edit."""
    return copy.deepcopy(_DELEGATED_BODY)
