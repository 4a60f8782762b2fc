from typing import cast

import pytest
from web3.exceptions import ContractCustomError, ContractLogicError, Web3RPCError
from web3.types import RPCResponse

from node.chain.reverts import SELECTORS, RevertAction, as_revert

# chain.md §5, as measured on the SDK's contracts.
TABLE = {
    "InvalidWallet": "0x23455ba1", "IntervalMismatch": "0x4db310c3", "IntervalCompleted": "0x2f4ca85b",
    "UnauthorizedVerifier": "0xb9857aa1", "NodeRespondedAlready": "0x88a21e4f",
    "SubscriptionNotFound": "0x1a00354f", "ProofRequestNotFound": "0x1d68b37c",
    "NotSubscriptionOwner": "0xa7fba711", "SubscriptionCompleted": "0xae6704a7",
    "SubscriptionNotActive": "0xefb74efe", "UnsupportedVerifierToken": "0xe2372799",
    "SignerMismatch": "0x10c74b03", "SignatureExpired": "0x0819bdcd", "TransferFailed": "0x90b8ec18",
    "InsufficientFunds": "0x356680b7", "InsufficientAllowance": "0x13be252b", "NodeNotAllowed": "0x42764946",
    "InsufficientBalance": "0xf4d678b8", "InvalidSignature": "0x8baa579f",
}  # fmt: skip


def test_selector_table_matches_the_sdk() -> None:
    assert {name: selector for selector, name in SELECTORS.items()} == TABLE


@pytest.mark.parametrize(
    "error",
    [
        ContractCustomError("0x88a21e4f", data="0x88a21e4f"),  # anvil via web3 8
        ContractLogicError("execution reverted", data={"data": "0x88a21e4f", "message": "x"}),  # hardhat
        ContractLogicError("execution reverted: custom error 0x88a21e4f"),  # only in the text
    ],
)
def test_selector_is_read_from_the_revert_data_whatever_its_shape(error: Exception) -> None:
    revert = as_revert(error)
    assert revert is not None and revert.name == "NodeRespondedAlready"
    assert revert.action is RevertAction.DONE and revert.quiet


def test_raw_bytes_from_in_process_backends() -> None:
    class TransactionFailed(Exception):
        pass

    revert = as_revert(TransactionFailed(b"\x10\xc7K\x03"))
    assert revert is not None and revert.name == "SignerMismatch" and revert.action is RevertAction.DROP


def test_revert_actions() -> None:
    def action(selector: str) -> RevertAction:
        revert = as_revert(ContractCustomError(selector, data=selector))
        assert revert is not None
        return revert.action

    assert action(TABLE["SubscriptionCompleted"]) is RevertAction.FINISHED
    assert action(TABLE["IntervalMismatch"]) is RevertAction.RETRY
    assert action(TABLE["SignatureExpired"]) is RevertAction.DROP
    assert action(TABLE["InsufficientFunds"]) is RevertAction.FAILED
    assert action("0x2592f163") is RevertAction.FAILED  # a consumer's own error


def test_unknown_and_dataless_reverts() -> None:
    unknown = as_revert(ContractCustomError("0x2592f163", data="0x2592f163"))
    assert unknown is not None and unknown.name is None and "unknown revert 0x2592f163" in unknown.describe()
    bare = as_revert(ContractLogicError("execution reverted"))
    assert bare is not None and bare.selector is None and bare.action is RevertAction.FAILED


def _rpc_error(error: dict[str, str]) -> RPCResponse:
    return cast(RPCResponse, {"error": error})  # a node's JSON-RPC error answer, as web3 hands it on


def test_rpc_errors_that_are_not_reverts_are_not_classified() -> None:
    assert as_revert(Web3RPCError("nonce too low", rpc_response=_rpc_error({"message": "nonce too low"}))) is None
    assert as_revert(ConnectionError("refused")) is None
    revert = as_revert(
        Web3RPCError("x", rpc_response=_rpc_error({"message": "execution reverted", "data": "0x0819bdcd"}))
    )
    assert revert is not None and revert.name == "SignatureExpired"
