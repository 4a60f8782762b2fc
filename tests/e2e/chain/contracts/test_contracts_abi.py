"""The ABI surface of our test contracts matches what the node (and the Infernet SDK) use:
error selectors, function signatures, event topics, EIP-712 typehashes; and the committed
build artifacts are what compile.js produces from the committed sources."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from web3 import AsyncWeb3, Web3

from tests.support.chain import (
    BUILD_DIR,
    CHAIN_TOOLS_DIR,
    InfernetDeployment,
    error_selectors,
    load_artifact,
)
from tests.support.requirements import unavailable

# chain.md §5 (plus solady's ECDSA InvalidSignature), as the node's raise_if_infernet_error knows them.
DOC_ERROR_SELECTORS = {
    "InvalidWallet": "0x23455ba1",
    "IntervalMismatch": "0x4db310c3",
    "IntervalCompleted": "0x2f4ca85b",
    "UnauthorizedVerifier": "0xb9857aa1",
    "NodeRespondedAlready": "0x88a21e4f",
    "SubscriptionNotFound": "0x1a00354f",
    "ProofRequestNotFound": "0x1d68b37c",
    "NotSubscriptionOwner": "0xa7fba711",
    "SubscriptionCompleted": "0xae6704a7",
    "SubscriptionNotActive": "0xefb74efe",
    "UnsupportedVerifierToken": "0xe2372799",
    "SignerMismatch": "0x10c74b03",
    "SignatureExpired": "0x0819bdcd",
    "TransferFailed": "0x90b8ec18",
    "InsufficientFunds": "0x356680b7",
    "InsufficientAllowance": "0x13be252b",
    "NodeNotAllowed": "0x42764946",
    "InsufficientBalance": "0xf4d678b8",
    "InvalidSignature": "0x8baa579f",
}

SUBSCRIPTION_TUPLE = "(address,uint32,uint32,uint32,uint16,bytes32,bool,address,uint256,address,address)"

# Every function the node calls, by canonical signature, per contract.
EXPECTED_FUNCTIONS = {
    "EIP712Coordinator": [
        "id()",
        "getSubscription(uint32)",
        "redundancyCount(bytes32)",
        "nodeResponded(bytes32)",
        "delegateCreatedIds(bytes32)",
        "maxSubscriberNonce(address)",
        "getSubscriptionInterval(uint32,uint32)",
        "createSubscription(string,uint32,uint32,uint16,bool,address,uint256,address,address)",
        "cancelSubscription(uint32)",
        "deliverCompute(uint32,uint32,bytes,bytes,bytes,address)",
        f"createSubscriptionDelegatee(uint32,uint32,{SUBSCRIPTION_TUPLE},uint8,bytes32,bytes32)",
        f"deliverComputeDelegatee(uint32,uint32,{SUBSCRIPTION_TUPLE},uint8,bytes32,bytes32,uint32,bytes,bytes,bytes,address)",
    ],
    "Reader": ["readSubscriptionBatch(uint32,uint32)", "readRedundancyCountBatch(uint32[],uint32[])"],
    "Registry": ["COORDINATOR()", "INBOX()", "READER()", "FEE()", "WALLET_FACTORY()"],
    "TestConsumer": [
        "getSigner()",
        "getContainerInputs(uint32,uint32,uint32,address)",
        "rawReceiveCompute(uint32,uint32,uint16,address,bytes,bytes,bytes,bytes32,uint256)",
    ],
}

# chain.md §2 gives topic0 abbreviated as prefix…suffix.
EXPECTED_EVENTS = {
    "SubscriptionCreated(uint32)": ("0x04344ed7", "b48e"),
    "SubscriptionCancelled(uint32)": ("0xf4126e31", "ac3e"),
    "SubscriptionFulfilled(uint32,address)": ("0xc68fb0ae", "e4c8"),
}

DOMAIN_TYPEHASH = "0x8b73c3c69bb8fe3d512ecc4cf759cc79239f7b179b0ffacaa9a75d522b39400f"
DELEGATE_SUBSCRIPTION_TYPEHASH = "0xba9ff1aef2b048b42767aade2b901745a3acf14f698a9ec13952098cfd03d0b6"
SUBSCRIPTION_ENCODE_TYPE = (
    "Subscription(address owner,uint32 activeAt,uint32 period,uint32 frequency,uint16 redundancy,"
    "bytes32 containerId,bool lazy,address verifier,uint256 paymentAmount,address paymentToken,address wallet)"
)


def _canonical_type(param: Mapping[str, Any]) -> str:
    kind: str = param["type"]
    if kind.startswith("tuple"):
        return "(" + ",".join(_canonical_type(c) for c in param["components"]) + ")" + kind[len("tuple") :]
    return kind


def _signature(item: Mapping[str, Any]) -> str:
    return f"{item['name']}({','.join(_canonical_type(p) for p in item['inputs'])})"


def _signatures(abi: Sequence[Mapping[str, Any]], kind: str) -> set[str]:
    return {_signature(item) for item in abi if item["type"] == kind}


def test_error_selectors_match_the_node_table() -> None:
    ours = error_selectors(load_artifact("EIP712Coordinator")["abi"])
    for name, selector in DOC_ERROR_SELECTORS.items():
        assert ours.get(name) == selector, name


def test_functions_the_node_uses_exist_with_exact_signatures() -> None:
    for contract, expected in EXPECTED_FUNCTIONS.items():
        present = _signatures(load_artifact(contract)["abi"], "function")
        missing = set(expected) - present
        assert not missing, f"{contract} lacks {missing}"


def test_subscription_outputs_keep_the_struct_order() -> None:
    abi = load_artifact("EIP712Coordinator")["abi"]
    (get_sub,) = [f for f in abi if f.get("name") == "getSubscription"]
    names = [c["name"] for c in get_sub["outputs"][0]["components"]]
    assert names == [
        "owner", "activeAt", "period", "frequency", "redundancy", "containerId",
        "lazy", "verifier", "paymentAmount", "paymentToken", "wallet",
    ]  # fmt: skip
    assert _canonical_type(get_sub["outputs"][0]) == SUBSCRIPTION_TUPLE
    reader = load_artifact("Reader")["abi"]
    batch = next(f for f in reader if f.get("name") == "readSubscriptionBatch")
    assert _canonical_type(batch["outputs"][0]) == SUBSCRIPTION_TUPLE + "[]"
    counts = next(f for f in reader if f.get("name") == "readRedundancyCountBatch")
    assert counts["outputs"][0]["type"] == "uint16[]"


def test_event_topics() -> None:
    abi = load_artifact("EIP712Coordinator")["abi"]
    present = _signatures(abi, "event")
    for signature, (prefix, suffix) in EXPECTED_EVENTS.items():
        assert signature in present
        topic = Web3.keccak(text=signature).to_0x_hex()
        assert topic.startswith(prefix) and topic.endswith(suffix), signature
    indexed = {e["name"]: [i["indexed"] for i in e["inputs"]] for e in abi if e["type"] == "event"}
    assert indexed["SubscriptionFulfilled"] == [True, True]


def test_typehash_strings_give_the_documented_hashes() -> None:
    # Pins the Python-side strings; the contract's constants are compared in the next test.
    domain = "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
    assert Web3.keccak(text=domain).to_0x_hex() == DOMAIN_TYPEHASH
    delegate = "DelegateSubscription(uint32 nonce,uint32 expiry,Subscription sub)" + SUBSCRIPTION_ENCODE_TYPE
    assert Web3.keccak(text=delegate).to_0x_hex() == DELEGATE_SUBSCRIPTION_TYPEHASH


@pytest.mark.chain
@pytest.mark.asyncio(loop_scope="session")
async def test_contract_typehashes_and_domain(anvil_w3: AsyncWeb3[Any], infernet_chain: InfernetDeployment) -> None:
    fns = infernet_chain.coordinator.functions
    assert await fns.EIP712_DOMAIN_TYPEHASH().call() == bytes.fromhex(DOMAIN_TYPEHASH[2:])
    assert await fns.EIP712_DELEGATE_SUBSCRIPTION_TYPEHASH().call() == bytes.fromhex(DELEGATE_SUBSCRIPTION_TYPEHASH[2:])
    assert await fns.EIP712_SUBSCRIPTION_TYPEHASH().call() == Web3.keccak(text=SUBSCRIPTION_ENCODE_TYPE)
    assert await fns.EIP712_NAME().call() == "InfernetCoordinator"
    assert await fns.EIP712_VERSION().call() == "1"
    chain_id = await anvil_w3.eth.chain_id
    fields, name, version, domain_chain_id, verifying, salt, extensions = await fns.eip712Domain().call()
    assert (fields, name, version, domain_chain_id) == (b"\x0f", "InfernetCoordinator", "1", chain_id)
    assert (verifying, salt, extensions) == (infernet_chain.coordinator_address, b"\x00" * 32, [])
    expected_separator = Web3.keccak(
        bytes.fromhex(DOMAIN_TYPEHASH[2:])
        + Web3.keccak(text="InfernetCoordinator")
        + Web3.keccak(text="1")
        + chain_id.to_bytes(32, "big")
        + bytes(12)
        + bytes.fromhex(infernet_chain.coordinator_address[2:])
    )
    assert await fns.DOMAIN_SEPARATOR().call() == expected_separator


def _node_available() -> bool:
    return shutil.which("node") is not None and (CHAIN_TOOLS_DIR / "node_modules" / "solc").is_dir()


@pytest.mark.slow
def test_committed_artifacts_are_up_to_date(tmp_path: Path) -> None:
    """Recompile into a temp dir: ABI and bytecode must equal the committed build/ artifacts
    (the bytecode embeds a hash of the sources, so any source edit without a rebuild fails here)."""
    if not _node_available():
        unavailable("needs node and `npm ci --prefix tools/chain`")
    subprocess.run(
        ["node", str(CHAIN_TOOLS_DIR / "compile.js"), "--out", str(tmp_path)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    fresh = {p.name for p in tmp_path.glob("*.json")}
    committed = {p.name for p in BUILD_DIR.glob("*.json")}
    assert fresh == committed, "run `node tools/chain/compile.js` and commit tools/chain/build"
    for name in sorted(fresh):
        new = json.loads((tmp_path / name).read_text())
        old = json.loads((BUILD_DIR / name).read_text())
        assert new["abi"] == old["abi"], f"stale ABI in build/{name}: run `node tools/chain/compile.js`"
        assert new["bytecode"] == old["bytecode"], f"stale bytecode in build/{name}: run `node tools/chain/compile.js`"
