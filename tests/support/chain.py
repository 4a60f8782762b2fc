"""Real-chain test support: an anvil process, our Infernet test contracts, EIP-712 helpers.

Everything here talks to a real anvil (npm ``@foundry-rs/anvil-linux-amd64``, pinned in tools/chain) bound to
127.0.0.1, using the committed artifacts in ``tools/chain/build`` (rebuild: ``node tools/chain/compile.js``).

Using the fixtures from a conftest.py::

    from tests.support.chain import (  # noqa: F401  (pytest finds fixtures by name)
        anvil, anvil_w3, anvil_accounts, infernet_chain, chain_snapshot, infernet_consumer,
    )

and mark async tests that use them with ``pytest.mark.asyncio(loop_scope="session")``, because the
AsyncWeb3 object and the deployment are shared by the whole session (one event loop).
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from eth_abi.abi import encode as abi_encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from web3 import AsyncHTTPProvider, AsyncWeb3, Web3
from web3.contract import AsyncContract
from web3.exceptions import ContractLogicError
from web3.types import RPCEndpoint, TxReceipt

from tests.support.processes import free_port, stop_process
from tests.support.requirements import unavailable

# --------------------------------------------------------------------------------------- constants

REPO_ROOT = Path(__file__).resolve().parents[2]
CHAIN_TOOLS_DIR = REPO_ROOT / "tools" / "chain"
BUILD_DIR = CHAIN_TOOLS_DIR / "build"
# The platform binary itself, not the npm bin.mjs wrapper, so the PID we terminate is anvil's.
DEFAULT_ANVIL_BINARY = CHAIN_TOOLS_DIR / "node_modules" / "@foundry-rs" / "anvil-linux-amd64" / "bin" / "anvil"
ANVIL_BINARY_ENV = "INFERNET_TEST_ANVIL"  # optional override of the binary path

# anvil's well-known development mnemonic, passed explicitly so account keys never depend on anvil defaults.
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"
ANVIL_CHAIN_ID = 31337
ANVIL_ACCOUNT_COUNT = 10

ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"
UINT32_MAX = 2**32 - 1  # activeAt of a cancelled subscription

EIP712_NAME = "InfernetCoordinator"
EIP712_VERSION = "1"
EIP712_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
EIP712_SUBSCRIPTION_TYPE = [
    {"name": "owner", "type": "address"},
    {"name": "activeAt", "type": "uint32"},
    {"name": "period", "type": "uint32"},
    {"name": "frequency", "type": "uint32"},
    {"name": "redundancy", "type": "uint16"},
    {"name": "containerId", "type": "bytes32"},
    {"name": "lazy", "type": "bool"},
    {"name": "verifier", "type": "address"},
    {"name": "paymentAmount", "type": "uint256"},
    {"name": "paymentToken", "type": "address"},
    {"name": "wallet", "type": "address"},
]
EIP712_DELEGATE_SUBSCRIPTION_TYPE = [
    {"name": "nonce", "type": "uint32"},
    {"name": "expiry", "type": "uint32"},
    {"name": "sub", "type": "Subscription"},
]

SUBSCRIPTION_CREATED_TOPIC = Web3.keccak(text="SubscriptionCreated(uint32)").to_0x_hex()

# JSON (REST body, snake_case) key -> EIP-712 / Solidity field, in struct order.
_SUB_FIELDS: tuple[tuple[str, str], ...] = (
    ("owner", "owner"),
    ("active_at", "activeAt"),
    ("period", "period"),
    ("frequency", "frequency"),
    ("redundancy", "redundancy"),
    ("containers", "containerId"),
    ("lazy", "lazy"),
    ("verifier", "verifier"),
    ("payment_amount", "paymentAmount"),
    ("payment_token", "paymentToken"),
    ("wallet", "wallet"),
)


# --------------------------------------------------------------------------------------- anvil


class AnvilError(RuntimeError):
    """anvil could not be started or answered a JSON-RPC request with an error."""


def anvil_binary() -> Path:
    """Path of the anvil binary (``$INFERNET_TEST_ANVIL`` or the one npm installs in tools/chain)."""
    override = os.environ.get(ANVIL_BINARY_ENV)
    return Path(override) if override else DEFAULT_ANVIL_BINARY


def anvil_available() -> bool:
    binary = anvil_binary()
    return binary.is_file() and os.access(binary, os.X_OK)


def _load_prctl() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Resolved in the parent: the child (between fork and exec) must not dlopen anything.
_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: ask Linux to SIGTERM anvil when the thread that started it
    exits (with pytest, the main thread), even by SIGKILL, so no orphaned chain is left behind."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


# No proxies: the RPC endpoint is on loopback, and *_proxy variables must never reroute it.
_LOOPBACK_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _sync_rpc(url: str, method: str, params: Sequence[Any] = (), timeout: float = 2.0) -> Any:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with _LOOPBACK_OPENER.open(request, timeout=timeout) as response:
        payload = json.loads(response.read())
    if "error" in payload:
        raise AnvilError(f"{method}: {payload['error']}")
    return payload["result"]


class Anvil:
    """One anvil process on 127.0.0.1:<free port>.

    ``start()`` returns once ``eth_chainId`` answers (or raises AnvilError after ``timeout``);
    ``stop()`` terminates it (SIGTERM, then SIGKILL). Also usable as a context manager.
    Accounts are derived from ``mnemonic`` and unlocked in anvil, each funded with 10000 ETH.
    """

    def __init__(
        self,
        binary: Path | str | None = None,
        *,
        chain_id: int = ANVIL_CHAIN_ID,
        accounts: int = ANVIL_ACCOUNT_COUNT,
        mnemonic: str = ANVIL_MNEMONIC,
        extra_args: Sequence[str] = (),
        die_with_parent: bool = True,
    ) -> None:
        self.binary = Path(binary) if binary is not None else anvil_binary()
        self.chain_id = chain_id
        self.account_count = accounts
        self.mnemonic = mnemonic
        self.extra_args = tuple(extra_args)
        # PR_SET_PDEATHSIG follows the *thread* that spawned anvil: pass False when starting it
        # from a short-lived thread (e.g. asyncio.to_thread), or anvil dies with that thread.
        self.die_with_parent = die_with_parent
        self.port: int | None = None
        self.startup_seconds: float | None = None  # spawn -> first eth_chainId answer
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None
        self._accounts: list[LocalAccount] | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise AnvilError("anvil is not running")
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self, timeout: float = 15.0, attempts: int = 3) -> Anvil:
        if self._proc is not None:
            return self
        if not self.binary.is_file():
            raise AnvilError(f"anvil binary not found at {self.binary} (run: npm ci --prefix tools/chain)")
        last_error = ""
        # The free port is probed then released, so another process may grab it first: retry.
        for _ in range(attempts):
            port = free_port()
            ok, last_error = self._spawn_and_wait(port, timeout)
            if ok:
                self.port = port
                return self
        raise AnvilError(f"anvil did not start: {last_error}")

    def _spawn_and_wait(self, port: int, timeout: float) -> tuple[bool, str]:
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop(), it outlives this call)
        args = [
            str(self.binary),
            "--host", "127.0.0.1",
            "--port", str(port),
            "--chain-id", str(self.chain_id),
            "--accounts", str(self.account_count),
            "--mnemonic", self.mnemonic,
            "--silent",
            *self.extra_args,
        ]  # fmt: skip
        started = time.monotonic()
        self._proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent if self.die_with_parent else None,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                output = self._read_log()
                self._cleanup()
                return False, f"exited with {self._proc.returncode if self._proc else '?'}: {output}"
            try:
                chain_id = int(_sync_rpc(url, "eth_chainId", timeout=1.0), 16)
            except (urllib.error.URLError, ConnectionError, OSError, AnvilError):
                time.sleep(0.02)
                continue
            if chain_id != self.chain_id:
                self.stop()
                return False, f"unexpected chain id {chain_id}"
            self.startup_seconds = time.monotonic() - started
            return True, ""
        output = self._read_log()
        self.stop()
        return False, f"no eth_chainId answer within {timeout}s: {output}"

    def _read_log(self) -> str:
        if self._log is None:
            return ""
        self._log.seek(0)
        data: bytes = self._log.read()
        return data.decode(errors="replace")[-2000:]

    def _cleanup(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            stop_process(proc, timeout)
        self._cleanup()
        self.port = None

    def rpc(self, method: str, params: Sequence[Any] = ()) -> Any:
        """Synchronous JSON-RPC call (for sync code and fixtures)."""
        return _sync_rpc(self.url, method, params, timeout=10.0)

    def accounts(self) -> list[LocalAccount]:
        """The funded dev accounts with private keys (same order as ``eth_accounts``)."""
        if self._accounts is None:
            self._accounts = derive_accounts(self.mnemonic, self.account_count)
        return self._accounts

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@lru_cache(maxsize=4)
def _derive_accounts_cached(mnemonic: str, count: int) -> tuple[LocalAccount, ...]:
    Account.enable_unaudited_hdwallet_features()  # required by eth-account for from_mnemonic
    return tuple(Account.from_mnemonic(mnemonic, account_path=f"m/44'/60'/0'/0/{i}") for i in range(count))


def derive_accounts(mnemonic: str = ANVIL_MNEMONIC, count: int = ANVIL_ACCOUNT_COUNT) -> list[LocalAccount]:
    """Accounts anvil creates from ``mnemonic`` (BIP-44 path m/44'/60'/0'/0/i)."""
    return list(_derive_accounts_cached(mnemonic, count))


# --------------------------------------------------------------------------------------- async RPC


def make_w3(url: str) -> AsyncWeb3[Any]:
    """AsyncWeb3 over HTTP. Close it with ``await w3.provider.disconnect()``."""
    return AsyncWeb3(AsyncHTTPProvider(url, request_kwargs={"timeout": 30}))


async def rpc(w3: AsyncWeb3[Any], method: str, params: Sequence[Any] = ()) -> Any:
    """Raw JSON-RPC (anvil/evm cheat methods web3 has no wrapper for)."""
    response = await w3.provider.make_request(RPCEndpoint(method), list(params))
    if "error" in response:
        raise AnvilError(f"{method}: {response['error']}")
    return response["result"]


async def snapshot(w3: AsyncWeb3[Any]) -> str:
    """``evm_snapshot``: id to pass to ``revert`` (an id is single-use in anvil)."""
    return str(await rpc(w3, "evm_snapshot"))


async def revert(w3: AsyncWeb3[Any], snapshot_id: str) -> bool:
    return bool(await rpc(w3, "evm_revert", [snapshot_id]))


async def mine(w3: AsyncWeb3[Any], blocks: int = 1) -> None:
    await rpc(w3, "anvil_mine", [hex(blocks)])


async def latest_timestamp(w3: AsyncWeb3[Any]) -> int:
    block = await w3.eth.get_block("latest")
    return int(block["timestamp"])


async def increase_time(w3: AsyncWeb3[Any], seconds: int) -> int:
    """Move chain time forward and mine a block so ``latest`` reflects it; returns its timestamp."""
    await rpc(w3, "evm_increaseTime", [int(seconds)])
    await mine(w3)
    return await latest_timestamp(w3)


async def set_next_block_timestamp(w3: AsyncWeb3[Any], timestamp: int) -> None:
    await rpc(w3, "evm_setNextBlockTimestamp", [int(timestamp)])


# --------------------------------------------------------------------------------------- contracts


@cache
def load_artifact(name: str) -> dict[str, Any]:
    """``{contractName, sourceName, abi, bytecode, compiler}`` from tools/chain/build/<name>.json."""
    artifact: dict[str, Any] = json.loads((BUILD_DIR / f"{name}.json").read_text())
    return artifact


class TxFailed(AssertionError):
    """A transaction was mined with status 0."""


async def transact(fn: Any, sender: str, **tx: Any) -> TxReceipt:
    """Send a contract function call from an unlocked anvil account and wait for a successful receipt.

    Reverts raise web3's ContractLogicError/ContractCustomError from gas estimation (use
    ``expect_revert``); pass ``gas=`` to skip estimation and get a mined failure (TxFailed) instead.
    """
    tx_hash = await fn.transact({"from": sender, **tx})
    receipt: TxReceipt = await fn.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=30)
    if receipt["status"] != 1:
        raise TxFailed(f"transaction {tx_hash.to_0x_hex()} reverted (status 0)")
    return receipt


async def deploy(w3: AsyncWeb3[Any], name: str, *args: Any, sender: str) -> AsyncContract:
    """Deploy build artifact ``name`` with constructor ``args``; returns the bound contract."""
    artifact = load_artifact(name)
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    receipt = await transact(factory.constructor(*args), sender)
    address = receipt["contractAddress"]
    assert address is not None, "deployment receipt without contractAddress"
    return w3.eth.contract(address=address, abi=artifact["abi"])


def contract_at(w3: AsyncWeb3[Any], name: str, address: str) -> AsyncContract:
    return w3.eth.contract(address=Web3.to_checksum_address(address), abi=load_artifact(name)["abi"])


@dataclass(frozen=True)
class InfernetDeployment:
    """The deployed Infernet test contracts. INBOX/FEE/WALLET_FACTORY in the registry are zero."""

    coordinator: AsyncContract  # EIP712Coordinator
    reader: AsyncContract
    registry: AsyncContract
    deployer: str
    chain_id: int

    @property
    def coordinator_address(self) -> str:
        return str(self.coordinator.address)

    @property
    def reader_address(self) -> str:
        return str(self.reader.address)

    @property
    def registry_address(self) -> str:
        return str(self.registry.address)


async def deploy_infernet(w3: AsyncWeb3[Any], deployer: str) -> InfernetDeployment:
    """Coordinator, then Reader(coordinator), then Registry(coordinator, 0, reader, 0, 0).

    Linear order is possible because our coordinator never reads the registry (the SDK's does,
    which forces it to precompute CREATE addresses)."""
    coordinator = await deploy(w3, "EIP712Coordinator", sender=deployer)
    reader = await deploy(w3, "Reader", coordinator.address, sender=deployer)
    registry = await deploy(
        w3, "Registry", coordinator.address, ZERO_ADDRESS, reader.address, ZERO_ADDRESS, ZERO_ADDRESS,
        sender=deployer,
    )  # fmt: skip
    return InfernetDeployment(
        coordinator=coordinator, reader=reader, registry=registry, deployer=deployer, chain_id=await w3.eth.chain_id
    )


async def deploy_consumer(w3: AsyncWeb3[Any], deployer: str, coordinator: str, signer: str) -> AsyncContract:
    """A TestConsumer bound to ``coordinator`` whose ``getSigner()`` is ``signer``."""
    return await deploy(w3, "TestConsumer", coordinator, signer, sender=deployer)


def _created_ids(receipt: TxReceipt) -> list[int]:
    return [
        int.from_bytes(bytes(log["topics"][1]), "big")
        for log in receipt["logs"]
        if log["topics"] and bytes(log["topics"][0]).hex() == SUBSCRIPTION_CREATED_TOPIC[2:]
    ]


def _join_containers(containers: Sequence[str] | str) -> str:
    return containers if isinstance(containers, str) else ",".join(containers)


async def create_callback(
    consumer: AsyncContract,
    sender: str,
    containers: Sequence[str] | str,
    inputs: bytes = b"",
    redundancy: int = 1,
) -> int:
    """``consumer.requestCallback``: one-shot subscription active now; returns its id."""
    fn = consumer.functions.requestCallback(_join_containers(containers), inputs, redundancy)
    return _created_ids(await transact(fn, sender))[0]


async def create_recurring(
    consumer: AsyncContract,
    sender: str,
    containers: Sequence[str] | str,
    *,
    frequency: int,
    period: int,
    redundancy: int = 1,
    inputs: bytes = b"",
) -> int:
    """``consumer.createRecurring``: interval 1 starts ``period`` seconds after this block; returns the id."""
    fn = consumer.functions.createRecurring(_join_containers(containers), frequency, period, redundancy, inputs)
    return _created_ids(await transact(fn, sender))[0]


async def cancel_subscription(consumer: AsyncContract, sender: str, subscription_id: int) -> None:
    await transact(consumer.functions.cancel(subscription_id), sender)


# --------------------------------------------------------------------------------------- reverts

_HEX_RE = re.compile(r"0x(?:[0-9a-fA-F]{2}){4,}")


def error_selector(name: str, input_types: Sequence[str] = ()) -> str:
    """``0x`` + first 4 bytes of keccak256("Name(type,...)")."""
    return Web3.keccak(text=f"{name}({','.join(input_types)})")[:4].to_0x_hex()


def error_selectors(abi: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Every custom error in ``abi``: name -> selector."""
    return {
        item["name"]: error_selector(item["name"], [i["type"] for i in item.get("inputs", [])])
        for item in abi
        if item.get("type") == "error"
    }


def revert_selector(exc: BaseException) -> str | None:
    """The 4-byte selector (``0x…`` lowercase) of the revert data carried by a web3 exception.

    Chains shape revert errors differently (``data`` as a hex str, a dict with ``data``, or bytes),
    so look at the revert data rather than at the exception class. Only revert data is read, never
    free-form messages (they may contain addresses that look like data)."""
    candidates: list[Any] = [getattr(exc, "data", None)]
    if isinstance(exc, ContractLogicError):
        candidates.extend(exc.args)  # web3: (message, data)
    for candidate in candidates:
        if isinstance(candidate, Mapping):
            candidate = candidate.get("data")
        if isinstance(candidate, (bytes, bytearray)) and len(candidate) >= 4:
            return "0x" + bytes(candidate[:4]).hex()
        if isinstance(candidate, str) and _HEX_RE.fullmatch(candidate):
            return candidate[:10].lower()
    return None


async def expect_revert(awaitable: Awaitable[Any]) -> str:
    """Await a call/transaction that must revert; returns the revert selector (AssertionError otherwise)."""
    try:
        await awaitable
    except Exception as exc:
        selector = revert_selector(exc)
        if selector is None:
            raise AssertionError(f"reverted without a selector: {exc!r}") from exc
        return selector
    raise AssertionError("expected a revert, but the call succeeded")


# --------------------------------------------------------------------------------------- EIP-712


def containers_hash(ids: Sequence[str] | str) -> str:
    """keccak256(abi.encode(string "id1,id2,...")) as 0x-lowercase hex: the on-chain containerId."""
    return Web3.keccak(abi_encode(["string"], [_join_containers(ids)])).to_0x_hex()


def _hash_bytes(value: str | bytes) -> bytes:
    raw = bytes.fromhex(value.removeprefix("0x")) if isinstance(value, str) else bytes(value)
    if len(raw) != 32:
        raise ValueError(f"expected a 32-byte hash, got {len(raw)} bytes")
    return raw


def delegate_subscription_typed_data(
    subscription: Mapping[str, Any], *, nonce: int, expiry: int, chain_id: int, coordinator: str
) -> dict[str, Any]:
    """EIP-712 full message for ``DelegateSubscription`` from a REST-style (snake_case) subscription."""
    message_sub: dict[str, Any] = {}
    for json_key, field in _SUB_FIELDS:
        value = subscription[json_key]
        if field == "containerId":
            value = _hash_bytes(value)
        elif field in ("owner", "verifier", "paymentToken", "wallet"):
            value = Web3.to_checksum_address(value)
        message_sub[field] = value
    return {
        "types": {
            "EIP712Domain": EIP712_DOMAIN_TYPE,
            "DelegateSubscription": EIP712_DELEGATE_SUBSCRIPTION_TYPE,
            "Subscription": EIP712_SUBSCRIPTION_TYPE,
        },
        "primaryType": "DelegateSubscription",
        "domain": {
            "name": EIP712_NAME,
            "version": EIP712_VERSION,
            "chainId": chain_id,
            "verifyingContract": Web3.to_checksum_address(coordinator),
        },
        "message": {"nonce": nonce, "expiry": expiry, "sub": message_sub},
    }


def sign_delegate_subscription(
    private_key: str | bytes,
    *,
    chain_id: int,
    coordinator: str,
    owner: str,
    nonce: int,
    expiry: int,
    containers: Sequence[str] | str,
    active_at: int = 0,
    period: int = 0,
    frequency: int = 1,
    redundancy: int = 1,
    lazy: bool = False,
    verifier: str = ZERO_ADDRESS,
    payment_amount: int = 0,
    payment_token: str = ZERO_ADDRESS,
    wallet: str = ZERO_ADDRESS,
    data: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``POST /api/jobs`` body of a delegated subscription, exactly as infernet-client 1.4 builds it.

    ``containers`` is a list of container ids (hashed here) or a ``0x`` 32-byte hash string.
    Addresses are kept as given in the body (the client does not normalise them)."""
    if isinstance(containers, str):
        hashed = "0x" + _hash_bytes(containers).hex()  # validates it is a 32-byte hash
    else:
        hashed = containers_hash(containers)
    subscription = {
        "owner": owner,
        "active_at": active_at,
        "period": period,
        "frequency": frequency,
        "redundancy": redundancy,
        "containers": hashed,
        "lazy": lazy,
        "verifier": verifier,
        "payment_amount": payment_amount,
        "payment_token": payment_token,
        "wallet": wallet,
    }
    typed = delegate_subscription_typed_data(
        subscription, nonce=nonce, expiry=expiry, chain_id=chain_id, coordinator=coordinator
    )
    signed = Account.sign_message(encode_typed_data(full_message=typed), private_key)
    return {
        "signature": {"nonce": nonce, "expiry": expiry, "v": int(signed.v), "r": int(signed.r), "s": int(signed.s)},
        "subscription": subscription,
        "data": dict(data) if data is not None else {},
    }


def recover_delegate_signer(body: Mapping[str, Any], *, chain_id: int, coordinator: str) -> str:
    """Signer address of a delegated-subscription body (what the node must compute)."""
    sig = body["signature"]
    typed = delegate_subscription_typed_data(
        body["subscription"], nonce=sig["nonce"], expiry=sig["expiry"], chain_id=chain_id, coordinator=coordinator
    )
    return str(Account.recover_message(encode_typed_data(full_message=typed), vrs=(sig["v"], sig["r"], sig["s"])))


def subscription_tuple(subscription: Mapping[str, Any]) -> tuple[Any, ...]:
    """REST-style subscription -> the Solidity ``Subscription`` tuple for contract calls."""
    typed = delegate_subscription_typed_data(subscription, nonce=0, expiry=0, chain_id=1, coordinator=ZERO_ADDRESS)
    sub = typed["message"]["sub"]
    return tuple(sub[field] for _, field in _SUB_FIELDS)


def signature_args(signature: Mapping[str, Any]) -> tuple[int, bytes, bytes]:
    """``(v, r, s)`` as the coordinator takes them (r, s as bytes32)."""
    return int(signature["v"]), int(signature["r"]).to_bytes(32, "big"), int(signature["s"]).to_bytes(32, "big")


def delegatee_args(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """``(nonce, expiry, sub, v, r, s)``: the leading arguments of createSubscriptionDelegatee /
    deliverComputeDelegatee for a signed body."""
    sig = body["signature"]
    return (sig["nonce"], sig["expiry"], subscription_tuple(body["subscription"]), *signature_args(sig))


# --------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def anvil() -> Iterator[Anvil]:
    """A running anvil for the whole session (skips if the binary is not installed)."""
    if not anvil_available():
        unavailable(f"anvil binary not found at {anvil_binary()}: run `npm ci --prefix tools/chain` (x86_64 Linux)")
    node = Anvil().start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def anvil_accounts(anvil: Anvil) -> list[LocalAccount]:
    """The 10 funded, unlocked dev accounts with keys. [0] deploys the Infernet contracts; tests may
    use the others freely as nodes, signers, etc."""
    return anvil.accounts()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def anvil_w3(anvil: Anvil) -> AsyncIterator[AsyncWeb3[Any]]:
    """Session AsyncWeb3 connected to the anvil fixture (session event loop)."""
    w3 = make_w3(anvil.url)
    try:
        yield w3
    finally:
        await w3.provider.disconnect()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def infernet_chain(anvil_w3: AsyncWeb3[Any], anvil_accounts: list[LocalAccount]) -> InfernetDeployment:
    """Coordinator + Reader + Registry, deployed once per session by ``anvil_accounts[0]``."""
    return await deploy_infernet(anvil_w3, anvil_accounts[0].address)


@pytest_asyncio.fixture(loop_scope="session")
async def chain_snapshot(anvil_w3: AsyncWeb3[Any], infernet_chain: InfernetDeployment) -> AsyncIterator[str]:
    """Isolates one test: ``evm_snapshot`` before, ``evm_revert`` after (state, blocks and time)."""
    snapshot_id = await snapshot(anvil_w3)
    try:
        yield snapshot_id
    finally:
        await revert(anvil_w3, snapshot_id)


@pytest_asyncio.fixture(loop_scope="session")
async def infernet_consumer(
    anvil_w3: AsyncWeb3[Any],
    infernet_chain: InfernetDeployment,
    anvil_accounts: list[LocalAccount],
    chain_snapshot: str,
) -> AsyncContract:
    """A fresh TestConsumer per test (inside the test's snapshot) whose signer is ``anvil_accounts[9]``."""
    return await deploy_consumer(
        anvil_w3, anvil_accounts[0].address, infernet_chain.coordinator_address, anvil_accounts[9].address
    )
