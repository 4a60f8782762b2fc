"""Helpers for the chain tests: node configs, node processes that report chain readiness, polling."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from eth_abi import decode as abi_decode
from web3.contract import AsyncContract

from tests.support.chain import InfernetDeployment, sign_delegate_subscription
from tests.support.client import CliResult
from tests.support.processes import NodeProcess, node_config

T = TypeVar("T")

READY_LINE = "snapshot sync done"


def node_chain_config(
    workdir: Path,
    *,
    rpc_url: str,
    registry: str,
    private_key: str,
    echo_url: str,
    slow_url: str,
    containers: list[dict[str, Any]] | None = None,
    **chain: Any,
) -> dict[str, Any]:
    """A test node with the chain on: no trailing blocks and fast polling, so tests stay quick."""
    base = [
        {"id": "echo", "url": echo_url, "external": True},
        {"id": "inner", "url": echo_url, "external": False},
        {"id": "slow", "url": slow_url, "external": True},
    ]
    chain_section: dict[str, Any] = {
        "enabled": True,
        "rpc_url": rpc_url,
        "registry_address": registry,
        "trail_head_blocks": 0,
        "wallet": {"private_key": private_key},
        "snapshot_sync": {"sleep": 0.0, "batch_size": 100, "sync_period": 0.1},
    }
    for key, value in chain.items():
        if isinstance(value, dict) and isinstance(chain_section.get(key), dict):
            chain_section[key] = {**chain_section[key], **value}
        else:
            chain_section[key] = value
    config = node_config(workdir, base + list(containers or []), chain=chain_section)
    return config


class ChainNode(NodeProcess):
    """A node process; `start()` returns once the chain module has synced."""

    def start(self, deadline_s: float = 30.0) -> ChainNode:
        super().start(deadline_s)
        end = time.monotonic() + deadline_s
        while READY_LINE not in self.log_text():
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"node exited:\n{self.log_text()}")
            if time.monotonic() > end:
                self.stop()
                raise RuntimeError(f"the chain module did not sync:\n{self.log_text()}")
            time.sleep(0.05)
        return self

    @property
    def log_path(self) -> Path:
        return Path(self.config["log"]["path"])

    def records(self) -> list[dict[str, Any]]:
        """The JSON log file's records."""
        if not self.log_path.exists():
            return []
        records = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records

    def info(self) -> dict[str, Any]:
        import urllib.request

        with urllib.request.urlopen(f"{self.url}/info", timeout=5) as response:
            return json.loads(response.read())

    def post(self, path: str, body: Any) -> tuple[int, Any]:
        import urllib.error
        import urllib.request

        request = urllib.request.Request(
            f"{self.url}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())


async def wait_until(
    probe: Callable[[], Awaitable[T]], timeout: float = 20.0, interval: float = 0.1, what: str = "condition"
) -> T:
    """Poll `probe` until it returns something truthy; return it (AssertionError on timeout)."""
    end = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)


@dataclass(frozen=True)
class Delivery:
    subscription_id: int
    interval: int
    redundancy: int
    node: str
    input: bytes
    output: bytes
    proof: bytes


async def deliveries(consumer: AsyncContract) -> list[Delivery]:
    count = await consumer.functions.deliveryCount().call()
    found = []
    for index in range(count):
        item = await consumer.functions.deliveries(index).call()
        found.append(Delivery(*item[:7]))
    return found


def decode_string(output: bytes) -> str:
    (text,) = abi_decode(["string"], output)
    return str(text)


async def node_tx_count(w3: Any, address: str) -> int:
    return int(await w3.eth.get_transaction_count(address, "pending"))


@dataclass(frozen=True)
class Delegation:
    """Signs delegated subscriptions for this test's consumer, exactly as infernet-client does.

    `signer` is the consumer's getSigner(); `expiry` is ten minutes past the chain time at the
    test's start."""

    chain: InfernetDeployment
    owner: str
    signer: Any
    expiry: int

    def body(self, nonce: int, containers: Any = ("echo",), *, key: Any = None, **fields: Any) -> dict[str, Any]:
        """The POST /api/jobs body; `key` signs instead of the consumer's signer, `fields` override
        the subscription's (and `expiry`, `data`)."""
        fields.setdefault("expiry", self.expiry)
        return sign_delegate_subscription(
            key if key is not None else self.signer.key,
            chain_id=self.chain.chain_id,
            coordinator=self.chain.coordinator_address,
            owner=self.owner,
            nonce=nonce,
            containers=list(containers) if not isinstance(containers, str) else containers,
            **fields,
        )


# `await sub_cli(node, nonce=..., key=..., data=..., expiry=...)` (conftest.py)
SubCli = Callable[..., Awaitable[CliResult]]
