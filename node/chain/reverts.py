"""Telling reverts apart by their 4-byte error selector.

Chains and web3 versions wrap revert data differently (a hex string in `data`, a
dict with a `data` key, raw bytes, or only the message text), so the selector is
dug out of the data, never inferred from the exception class (chain.md §5).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eth_utils import keccak
from web3.exceptions import ContractLogicError, Web3RPCError


def selector_of(signature: str) -> str:
    return "0x" + keccak(text=signature)[:4].hex()


class RevertAction(enum.Enum):
    """What a revert means for the delivery that hit it."""

    DONE = "done"  # this interval needs nothing more from us (we, or enough others, delivered)
    FINISHED = "finished"  # the subscription needs nothing more: stop tracking it
    RETRY = "retry"  # a timing race (interval boundary, not yet active): try again soon
    DROP = "drop"  # can never succeed (bad signature, expired, not found): stop tracking it
    FAILED = "failed"  # anything else: counts as a failed attempt


# name -> what it means; the SDK's custom errors plus the Wallet/Allowlist/ERC20 ones.
INFERNET_ERRORS: dict[str, RevertAction] = {
    "NodeRespondedAlready": RevertAction.DONE,
    "IntervalCompleted": RevertAction.DONE,
    "SubscriptionCompleted": RevertAction.FINISHED,
    "IntervalMismatch": RevertAction.RETRY,
    "SubscriptionNotActive": RevertAction.RETRY,
    "SubscriptionNotFound": RevertAction.DROP,
    "SignatureExpired": RevertAction.DROP,
    "SignerMismatch": RevertAction.DROP,
    "InvalidSignature": RevertAction.DROP,
    "NotSubscriptionOwner": RevertAction.FAILED,
    "InvalidWallet": RevertAction.FAILED,
    "UnauthorizedVerifier": RevertAction.FAILED,
    "ProofRequestNotFound": RevertAction.FAILED,
    "UnsupportedVerifierToken": RevertAction.FAILED,
    "TransferFailed": RevertAction.FAILED,
    "InsufficientFunds": RevertAction.FAILED,
    "InsufficientAllowance": RevertAction.FAILED,
    "NodeNotAllowed": RevertAction.FAILED,
    "InsufficientBalance": RevertAction.FAILED,
}

SELECTORS: dict[str, str] = {selector_of(f"{name}()"): name for name in INFERNET_ERRORS}
# Another node won the race: not worth an error line.
QUIET = {"NodeRespondedAlready", "IntervalCompleted", "SubscriptionCompleted"}

_HEX = re.compile(r"0x[0-9a-fA-F]{8,}")


@dataclass(frozen=True, slots=True)
class Revert:
    selector: str | None  # "0x1234abcd", or None for a revert without data (require / panic)
    message: str

    @property
    def name(self) -> str | None:
        return SELECTORS.get(self.selector) if self.selector else None

    @property
    def action(self) -> RevertAction:
        name = self.name
        return INFERNET_ERRORS[name] if name else RevertAction.FAILED

    @property
    def quiet(self) -> bool:
        return self.name in QUIET

    def describe(self) -> str:
        if self.name:
            return f"{self.name} ({self.selector})"
        if self.selector:
            return f"unknown revert {self.selector}"
        return f"revert: {self.message}"


def _selector_in(candidate: Any) -> str | None:
    if isinstance(candidate, Mapping):
        candidate = candidate.get("data")
    if isinstance(candidate, (bytes, bytearray)):
        return "0x" + bytes(candidate[:4]).hex() if len(candidate) >= 4 else None
    if isinstance(candidate, str):
        match = _HEX.search(candidate)
        if match:
            return match.group(0)[:10].lower()
    return None


def _rpc_error(exc: Web3RPCError) -> Mapping[str, Any]:
    response = getattr(exc, "rpc_response", None) or {}
    error = response.get("error") if isinstance(response, Mapping) else None
    return error if isinstance(error, Mapping) else {}


def as_revert(exc: BaseException) -> Revert | None:
    """The revert `exc` reports, or None when it is not a revert (e.g. the RPC is down)."""
    if isinstance(exc, ContractLogicError):
        for candidate in (getattr(exc, "data", None), *exc.args):
            selector = _selector_in(candidate)
            if selector:
                return Revert(selector, str(exc))
        return Revert(None, str(exc))
    if isinstance(exc, Web3RPCError):
        error = _rpc_error(exc)
        message = str(error.get("message", exc))
        if "revert" not in message.lower():
            return None
        return Revert(_selector_in(error.get("data")), message)
    # eth-tester and other in-process backends raise their own types carrying raw bytes.
    if type(exc).__name__ == "TransactionFailed":
        return Revert(_selector_in(exc.args[0] if exc.args else None), str(exc))
    return None
