"""The ABI fragments the node uses (Infernet SDK v1.1 surface), written out by hand.

Only the functions the node calls are listed; the node never needs the contracts'
sources or build artifacts at runtime.
"""

from __future__ import annotations

from typing import Any


def _fn(name: str, inputs: list[tuple[str, str]], outputs: list[Any], mutability: str = "view") -> dict[str, Any]:
    return {
        "type": "function",
        "name": name,
        "stateMutability": mutability,
        "inputs": [_param(n, t) for n, t in inputs],
        "outputs": [o if isinstance(o, dict) else _param("", o) for o in outputs],
    }


def _param(name: str, type_: str) -> dict[str, Any]:
    return {"name": name, "type": type_}


# struct Subscription, in declaration order (the order is part of the wire format).
SUBSCRIPTION_FIELDS: tuple[tuple[str, str], ...] = (
    ("owner", "address"),
    ("activeAt", "uint32"),
    ("period", "uint32"),
    ("frequency", "uint32"),
    ("redundancy", "uint16"),
    ("containerId", "bytes32"),
    ("lazy", "bool"),
    ("verifier", "address"),
    ("paymentAmount", "uint256"),
    ("paymentToken", "address"),
    ("wallet", "address"),
)


def _subscription(name: str = "", array: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "type": "tuple[]" if array else "tuple",
        "internalType": "struct Subscription[]" if array else "struct Subscription",
        "components": [_param(n, t) for n, t in SUBSCRIPTION_FIELDS],
    }


REGISTRY_ABI = [
    _fn("COORDINATOR", [], ["address"]),
    _fn("READER", [], ["address"]),
    _fn("WALLET_FACTORY", [], ["address"]),
]

_DELIVERY_TAIL = [
    ("deliveryInterval", "uint32"),
    ("input", "bytes"),
    ("output", "bytes"),
    ("proof", "bytes"),
    ("nodeWallet", "address"),
]

COORDINATOR_ABI = [
    _fn("id", [], ["uint32"]),
    _fn("getSubscription", [("subscriptionId", "uint32")], [_subscription()]),
    _fn("redundancyCount", [("key", "bytes32")], ["uint16"]),
    _fn("nodeResponded", [("key", "bytes32")], ["bool"]),
    _fn("delegateCreatedIds", [("key", "bytes32")], ["uint32"]),
    _fn(
        "deliverCompute",
        [("subscriptionId", "uint32"), *_DELIVERY_TAIL],
        [],
        "nonpayable",
    ),
    {
        "type": "function",
        "name": "deliverComputeDelegatee",
        "stateMutability": "nonpayable",
        "inputs": [
            _param("nonce", "uint32"),
            _param("expiry", "uint32"),
            _subscription("sub"),
            _param("v", "uint8"),
            _param("r", "bytes32"),
            _param("s", "bytes32"),
            *[_param(n, t) for n, t in _DELIVERY_TAIL],
        ],
        "outputs": [],
    },
]

READER_ABI = [
    _fn("readSubscriptionBatch", [("startId", "uint32"), ("endId", "uint32")], [_subscription(array=True)]),
    _fn("readRedundancyCountBatch", [("ids", "uint32[]"), ("intervals", "uint32[]")], ["uint16[]"]),
]

CONSUMER_ABI = [
    _fn(
        "getContainerInputs",
        [("subscriptionId", "uint32"), ("interval", "uint32"), ("timestamp", "uint32"), ("caller", "address")],
        ["bytes"],
    ),
    _fn("getSigner", [], ["address"]),
]

WALLET_FACTORY_ABI = [_fn("isValidWallet", [("wallet", "address")], ["bool"])]

ERC20_ABI = [_fn("balanceOf", [("account", "address")], ["uint256"])]
