"""scripts/devchain.sh: one command gives a chain with the contracts, a service and a node attached."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from web3 import HTTPProvider, Web3

from tests.support.chain import anvil_available, load_artifact
from tests.support.processes import ROOT, free_port
from tests.support.requirements import unavailable

pytestmark = pytest.mark.chain


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_devchain_starts_everything_delivers_and_stops_cleanly(tmp_path: Path) -> None:
    if not anvil_available():
        unavailable("anvil is not installed (npm ci --prefix tools/chain)")
    ports = {name: free_port() for name in ("ANVIL_PORT", "SERVICE_PORT", "NODE_PORT")}
    env = {**os.environ, "DEVCHAIN_DIR": str(tmp_path / "devchain"), **{k: str(v) for k, v in ports.items()}}
    output = tmp_path / "devchain.out"
    with output.open("wb") as sink:
        script = subprocess.Popen(
            ["bash", str(ROOT / "scripts" / "devchain.sh")], cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while "snapshot sync done" not in output.read_text(errors="replace"):
            assert script.poll() is None, output.read_text()
            assert time.monotonic() < deadline, output.read_text()
            time.sleep(0.2)
        config = json.loads((tmp_path / "devchain" / "config.json").read_text())
        assert config["chain"]["enabled"] and config["server"]["host"] == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{ports['NODE_PORT']}/info", timeout=5) as response:
            info = json.loads(response.read())
        assert info["chain"]["address"] == "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"  # anvil account #1

        deployment = json.loads((tmp_path / "devchain" / "deployment.json").read_text())
        w3 = Web3(HTTPProvider(f"http://127.0.0.1:{ports['ANVIL_PORT']}"))
        consumer = w3.eth.contract(address=deployment["consumer"], abi=load_artifact("TestConsumer")["abi"])
        tx = consumer.functions.requestCallback("hello-world", b"dev", 1).transact({"from": w3.eth.accounts[0]})
        assert w3.eth.wait_for_transaction_receipt(tx)["status"] == 1
        deadline = time.monotonic() + 20
        while consumer.functions.deliveryCount().call() == 0:
            assert time.monotonic() < deadline, output.read_text()
            time.sleep(0.1)
        assert consumer.functions.getSigner().call() == deployment["signer"]
    finally:
        if script.poll() is None:
            script.send_signal(signal.SIGTERM)  # the script's trap stops what it started
            try:
                script.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(script.pid, signal.SIGKILL)
                script.wait()
    assert not any(_listening(port) for port in ports.values()), output.read_text()
