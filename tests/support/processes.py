"""Real processes for tests: the node itself and the sample services, on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds; reaps it either way."""
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


def wait_http(url: str, deadline_s: float = 15.0, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll `url` until it answers (any status), or fail with a clear message."""
    end = time.monotonic() + deadline_s
    last: Exception | None = None
    while time.monotonic() < end:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError as error:
            last = error
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer within {deadline_s}s: {last}")


@contextmanager
def service_process(
    name: str = "hello-world",
    env: dict[str, str] | None = None,
    log: Path | None = None,
    drop_env: tuple[str, ...] = (),
) -> Iterator[str]:
    """Run containers/<name>/app.py (or a test service: "slow", "chat", "hostile") locally; yields its URL.

    `log` takes its output (else it is dropped); variables of the caller's environment whose
    names start with one of `drop_env` are not passed on, so a developer's shell cannot leak
    settings (or secrets) into a test.
    """
    port = free_port()
    inherited = {key: value for key, value in os.environ.items() if not (drop_env and key.startswith(drop_env))}
    environment = {**inherited, "HOST": "127.0.0.1", "PORT": str(port), **(env or {})}
    test_services = {"slow": "slow_service.py", "chat": "chat_service.py", "hostile": "hostile_service.py"}
    if name in test_services:
        script = ROOT / "tests" / "support" / test_services[name]
    else:
        script = ROOT / "containers" / name / "app.py"
    with log.open("ab") if log is not None else open(os.devnull, "wb") as sink:
        process = subprocess.Popen([PYTHON, str(script)], env=environment, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", process=process)
        yield url
    finally:
        stop_process(process)


def node_config(
    tmp: Path, containers: list[dict[str, Any]], port: int | None = None, **sections: Any
) -> dict[str, Any]:
    """A config for a test node: loopback only, store and log under `tmp`, no rate limit."""
    config: dict[str, Any] = {
        "log": {"path": str(tmp / "node.log"), "level": "INFO"},
        "server": {"host": "127.0.0.1", "port": port or free_port(), "rate_limit": {"num_requests": 0}},
        "store": {"url": f"sqlite+aiosqlite:///{tmp / 'node.db'}"},
        "jobs": {"shutdown_grace_seconds": 2},
        "containers": containers,
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    return config


class NodeProcess:
    """`infernet-node run` as a separate process, so it can be SIGKILLed and restarted."""

    def __init__(self, config: dict[str, Any], workdir: Path) -> None:
        self.config = config
        self.workdir = workdir
        self.config_path = workdir / "config.json"
        self.config_path.write_text(json.dumps(config))
        self.process: subprocess.Popen[bytes] | None = None
        self.output = workdir / "node-stdio.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.config['server']['port']}"

    def launch(self) -> NodeProcess:
        """Start the process and return at once (start() also waits until it serves)."""
        with self.output.open("ab") as sink:
            self.process = subprocess.Popen(
                [PYTHON, "-m", "node", "run", "--config", str(self.config_path)],
                cwd=self.workdir,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        return self

    def wait_for_log(self, text: str, deadline_s: float = 30.0) -> str:
        """The first line of the node's output holding `text`; fails if it exits or times out first."""
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            for line in self.log_text().splitlines():
                if text in line:
                    return line
            if self.process is None or self.process.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"no {text!r} in the node's output:\n{self.log_text()}")

    def start(self, deadline_s: float = 30.0) -> NodeProcess:
        self.launch()
        try:
            wait_http(f"{self.url}/health", deadline_s, self.process)
        except Exception:
            self.stop()
            raise RuntimeError(f"node did not start:\n{self.log_text()}") from None
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as in a crash."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait: the graceful path."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log_text(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""


def run_node_to_exit(
    config: dict[str, Any],
    workdir: Path,
    env: dict[str, str] | None = None,
    prefix: tuple[str, ...] = (),
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """`infernet-node run` for a node expected to stop at start: its exit code, stdout and stderr apart.

    `prefix` runs it under another command (e.g. setpriv); a node that keeps running fails the test."""
    config_path = workdir / "config.json"
    config_path.write_text(json.dumps(config))
    try:
        return subprocess.run(
            [*prefix, PYTHON, "-m", "node", "run", "--config", str(config_path)],
            cwd=workdir,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the node did not stop at start within {timeout:g}s")


@contextmanager
def running_node(config: dict[str, Any], workdir: Path) -> Iterator[NodeProcess]:
    node = NodeProcess(config, workdir).start()
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture(scope="session")
def echo_service() -> Iterator[str]:
    """The hello-world echo service as a local process, for the whole session."""
    with service_process("hello-world") as url:
        yield url
