#!/usr/bin/env python3
"""Deploy the Infernet test contracts (tools/chain/build) to a dev chain and print their addresses.

    python tools/chain/deploy.py --rpc-url http://127.0.0.1:8545 [--deployer-key KEY]
                                 [--signer ADDRESS] [--out deployment.json]

Deploys EIP712Coordinator, Reader(coordinator), Registry(coordinator, 0, reader, 0, 0) and one
TestConsumer whose getSigner() is --signer, signing locally with --deployer-key (default: anvil's
dev account #0, derived from its public mnemonic: for local chains only). Prints, and with --out
writes, {"chain_id", "registry", "coordinator", "reader", "consumer", "signer", "deployer"}.
Point a node at it with chain.registry_address = registry.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from eth_account import Account
from web3 import HTTPProvider, Web3

BUILD = Path(__file__).resolve().parent / "build"
DEV_MNEMONIC = "test test test test test test test test test test test junk"  # anvil's public default
ZERO = "0x0000000000000000000000000000000000000000"


def dev_key(index: int) -> str:
    Account.enable_unaudited_hdwallet_features()
    return Account.from_mnemonic(DEV_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}").key.to_0x_hex()


def _artifact(name: str) -> dict[str, Any]:
    return json.loads((BUILD / f"{name}.json").read_text())


def _deploy(w3: Web3, account: Any, name: str, *args: Any) -> str:
    artifact = _artifact(name)
    factory = w3.eth.contract(abi=artifact["abi"], bytecode=artifact["bytecode"])
    tx = factory.constructor(*args).build_transaction(
        {"from": account.address, "nonce": w3.eth.get_transaction_count(account.address, "pending")}
    )
    signed = account.sign_transaction(tx)
    receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction), timeout=60)
    if receipt["status"] != 1:
        raise SystemExit(f"deploying {name} failed (transaction {signed.hash.to_0x_hex()})")
    return str(receipt["contractAddress"])


def deploy(rpc_url: str, deployer_key: str, signer: str) -> dict[str, Any]:
    w3 = Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": 30}))
    account = Account.from_key(deployer_key)
    coordinator = _deploy(w3, account, "EIP712Coordinator")
    reader = _deploy(w3, account, "Reader", coordinator)
    registry = _deploy(w3, account, "Registry", coordinator, ZERO, reader, ZERO, ZERO)
    consumer = _deploy(w3, account, "TestConsumer", coordinator, Web3.to_checksum_address(signer))
    return {
        "chain_id": w3.eth.chain_id,
        "registry": registry,
        "coordinator": coordinator,
        "reader": reader,
        "consumer": consumer,
        "signer": Web3.to_checksum_address(signer),
        "deployer": account.address,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rpc-url", required=True)
    parser.add_argument("--deployer-key", help="hex private key (default: anvil dev account #0)")
    parser.add_argument("--signer", help="the consumer's getSigner() (default: anvil dev account #2)")
    parser.add_argument("--out", type=Path, help="also write the addresses to this JSON file")
    args = parser.parse_args(argv)
    signer = args.signer or Account.from_key(dev_key(2)).address
    result = deploy(args.rpc_url, args.deployer_key or dev_key(0), signer)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
