import pytest
from web3.exceptions import ContractCustomError, ContractLogicError, Web3RPCError

from node.chain.reverts import SELECTORS, Outcome, as_revert

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
    assert revert.outcome is Outcome.DONE and revert.quiet


def test_raw_bytes_from_in_process_backends() -> None:
    class TransactionFailed(Exception):
        pass

    revert = as_revert(TransactionFailed(b"\x10\xc7K\x03"))
    assert revert is not None and revert.name == "SignerMismatch" and revert.outcome is Outcome.DROP


def test_outcomes() -> None:
    def outcome(selector: str) -> Outcome:
        revert = as_revert(ContractCustomError(selector, data=selector))
        assert revert is not None
        return revert.outcome

    assert outcome(TABLE["SubscriptionCompleted"]) is Outcome.FINISHED
    assert outcome(TABLE["IntervalMismatch"]) is Outcome.RETRY
    assert outcome(TABLE["SignatureExpired"]) is Outcome.DROP
    assert outcome(TABLE["InsufficientFunds"]) is Outcome.FAILED
    assert outcome("0x2592f163") is Outcome.FAILED  # a consumer's own error


def test_unknown_and_dataless_reverts() -> None:
    unknown = as_revert(ContractCustomError("0x2592f163", data="0x2592f163"))
    assert unknown is not None and unknown.name is None and "unknown revert 0x2592f163" in unknown.describe()
    bare = as_revert(ContractLogicError("execution reverted"))
    assert bare is not None and bare.selector is None and bare.outcome is Outcome.FAILED


def test_rpc_errors_that_are_not_reverts_are_not_classified() -> None:
    assert as_revert(Web3RPCError("nonce too low", rpc_response={"error": {"message": "nonce too low"}})) is None
    assert as_revert(ConnectionError("refused")) is None
    revert = as_revert(
        Web3RPCError("x", rpc_response={"error": {"message": "execution reverted", "data": "0x0819bdcd"}})
    )
    assert revert is not None and revert.name == "SignatureExpired"
