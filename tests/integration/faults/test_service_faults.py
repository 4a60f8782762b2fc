"""A service killed or hung in the middle of a call: the affected jobs fail with a
clear error within their timeout, and the node stays healthy for everyone else."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.faults.httpcalls import call, wait_final
from tests.support.processes import (
    PYTHON,
    ROOT,
    NodeProcess,
    free_port,
    node_config,
    service_process,
    wait_http,
)

pytestmark = pytest.mark.slow

TIMEOUT = 2.0  # the hung service's container timeout


class Service:
    """A service process this test may SIGKILL."""

    def __init__(self, script: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [PYTHON, str(script)],
            env={**os.environ, "HOST": "127.0.0.1", "PORT": str(self.port), **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_http(f"{self.url}/health", process=self.process)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()


@contextmanager
def black_hole() -> Iterator[str]:
    """A port that completes TCP handshakes and never reads a byte (a wedged process)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def healthy(node: NodeProcess, echo_container: str = "echo") -> None:
    """/health answers, and a job on a working service still succeeds."""
    status, _, body = call(f"{node.url}/health", timeout=1)
    assert (status, body) == (200, {"status": "healthy"})
    status, _, body = call(f"{node.url}/api/jobs", "POST", {"containers": [echo_container], "data": {"still": "ok"}})
    assert status == 200, body
    result = wait_final(node.url, [body["id"]], deadline_s=10)[body["id"]]
    assert result["status"] == "success", result


@pytest.fixture(scope="module")
def echo_url() -> Iterator[str]:
    with service_process("hello-world") as url:
        yield url


def test_service_killed_mid_call(tmp_path: Path, echo_url: str) -> None:
    victim = Service(ROOT / "tests" / "support" / "slow_service.py")
    try:
        config = node_config(
            tmp_path,
            [{"id": "victim", "url": victim.url, "timeout": 30}, {"id": "echo", "url": echo_url}],
            jobs={"workers": 8},
        )
        node = NodeProcess(config, tmp_path).start()
        try:
            ids = [
                call(f"{node.url}/api/jobs", "POST", {"containers": ["victim"], "data": {"sleep": 20, "n": n}})[2]["id"]
                for n in range(4)
            ]
            time.sleep(0.5)  # the calls are inside the service now
            victim.kill()
            killed_at = time.monotonic()
            # Far sooner than the 30 s timeout: a dead peer is noticed at once.
            final = wait_final(node.url, ids, deadline_s=10)
            noticed_after = time.monotonic() - killed_at
            for job_id in ids:
                assert final[job_id]["status"] == "failed"
                error = final[job_id]["result"]["error"]
                assert error.startswith("could not reach the container"), error
            # With the service gone, new jobs fail cleanly too.
            status, _, body = call(f"{node.url}/api/jobs", "POST", {"containers": ["victim"], "data": {}})
            assert status == 200
            late = wait_final(node.url, [body["id"]], deadline_s=10)[body["id"]]
            assert late["status"] == "failed" and "could not reach the container" in late["result"]["error"]
            healthy(node)
            print(f"killed-service jobs failed {noticed_after:.2f}s after the kill")
        finally:
            assert node.stop() == 0
    finally:
        victim.kill()


def test_service_hung_mid_call(tmp_path: Path, echo_url: str) -> None:
    hung = Service(ROOT / "tests" / "support" / "slow_service.py")
    try:
        with black_hole() as wedged_url:
            config = node_config(
                tmp_path,
                [
                    {"id": "hung", "url": hung.url, "timeout": TIMEOUT},
                    {"id": "wedged", "url": wedged_url, "timeout": TIMEOUT},
                    {"id": "echo", "url": echo_url},
                ],
                jobs={"workers": 16},
            )
            node = NodeProcess(config, tmp_path).start()
            try:
                submitted = time.monotonic()
                ids = [
                    call(f"{node.url}/api/jobs", "POST", {"containers": [name], "data": {"sleep": 600}})[2]["id"]
                    for name in ("hung", "hung", "wedged", "wedged")
                ]
                # While they hang, the node serves everyone else.
                healthy(node)
                # Within their timeout (plus polling slack), not "eventually".
                final = wait_final(node.url, ids, deadline_s=TIMEOUT + 3)
                elapsed = time.monotonic() - submitted
                for job_id in ids:
                    assert final[job_id]["status"] == "failed"
                    assert final[job_id]["result"]["error"] == f"container did not answer within {TIMEOUT:g}s"
                assert elapsed >= TIMEOUT
                healthy(node)
            finally:
                assert node.stop() == 0
    finally:
        hung.kill()


def test_stream_service_killed_mid_stream(tmp_path: Path) -> None:
    streamer = Service(ROOT / "containers" / "hello-world" / "app.py", env={"STREAM_DELAY_MS": "100"})
    try:
        config = node_config(tmp_path, [{"id": "streamer", "url": streamer.url}])
        node = NodeProcess(config, tmp_path).start()
        try:
            words = " ".join(f"word{n}" for n in range(200))  # 20 s at 100 ms per word
            request = urllib.request.Request(
                f"{node.url}/api/jobs/stream",
                data=json.dumps({"containers": ["streamer"], "data": words}).encode(),
                method="POST",
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=15) as response:
                assert response.status == 200
                job_id = response.readline().decode().strip()
                response.read(20)  # some output arrived
                streamer.kill()
                rest = response.read()  # the node ends the stream instead of hanging
            assert len(rest) < len(words)
            result = wait_final(node.url, [job_id], deadline_s=10)[job_id]
            assert result["status"] == "failed"
            assert "stream broke" in result["result"]["error"], result
            # The node stays healthy.
            status, _, _ = call(f"{node.url}/health", timeout=1)
            assert status == 200
        finally:
            assert node.stop() == 0
    finally:
        streamer.kill()
