"""SIGTERM: stop accepting at once, let running jobs finish within the grace period,
fail the ones that overrun it, keep queued ones queued for the restart, exit 0."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from node.jobs.queue import SHUTDOWN_REASON
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

GRACE = 3.0


def refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def test_sigterm_drains_running_jobs_within_grace_and_keeps_the_queue(tmp_path: Path) -> None:
    calls_file = tmp_path / "calls.jsonl"
    with service_process("slow", env={"CALLS_FILE": str(calls_file)}) as slow_url:
        config = node_config(
            tmp_path, [{"id": "slow", "url": slow_url}], jobs={"workers": 2, "shutdown_grace_seconds": GRACE}
        )
        node = NodeProcess(config, tmp_path).start()

        def submit(marker: str, sleep: float) -> str:
            status, _, body = call(
                f"{node.url}/api/jobs", "POST", {"containers": ["slow"], "data": {"marker": marker, "sleep": sleep}}
            )
            assert status == 200, body
            return str(body["id"])

        short = submit("short", 1.0)  # ends inside the grace period
        overrun = submit("overrun", 60)  # cannot: failed when the grace runs out
        queued = [submit(f"queued-{n}", 0) for n in range(5)]  # both workers busy: these wait
        time.sleep(0.3)

        assert node.process is not None
        term_at = time.monotonic()
        node.process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        # Stop accepting: the listener is closed while the jobs drain.
        assert node.process.poll() is None, "the node should still be draining its running jobs"
        assert refuses_connections(config["server"]["port"])
        code = node.process.wait(GRACE + 15)
        stopped_after = time.monotonic() - term_at
        assert code == 0, node.log_text()[-2000:]
        log = node.log_text()
        assert "waiting up to" in log and "recorded as failed" in log
        assert "5 queued jobs stay queued" in log

        # While stopped: what the store holds.
        node.start()
        try:
            final = wait_final(node.url, [short, overrun, *queued], deadline_s=20)
        finally:
            assert node.stop() == 0

    assert final[short]["status"] == "success"
    assert final[overrun]["status"] == "failed"
    assert final[overrun]["result"]["error"] == SHUTDOWN_REASON
    for job_id in queued:
        assert final[job_id]["status"] == "success", final[job_id]
    received = Counter(json.loads(line)["marker"] for line in calls_file.read_text().splitlines())
    # Queued jobs were not started during the shutdown, and ran once after it.
    assert received == Counter({"short": 1, "overrun": 1, **{f"queued-{n}": 1 for n in range(5)}})
    # The grace bounds the stop: it did not wait for the 60 s job.
    assert stopped_after < GRACE + 10, stopped_after
    print(f"stopped {stopped_after:.2f}s after SIGTERM (grace {GRACE}s)")


@pytest.mark.parametrize("grace", [10.0, 2.0], ids=["stream-within-grace", "stream-beyond-grace"])
def test_sigterm_gives_a_running_stream_the_grace_period(tmp_path: Path, grace: float) -> None:
    """A stream is a running job too: it gets the grace period (not a fixed HTTP
    timeout), and when it overruns it the job is recorded as failed."""
    port = free_port()
    streamer = subprocess.Popen(
        [PYTHON, str(ROOT / "containers" / "hello-world" / "app.py")],
        env={**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "STREAM_DELAY_MS": "150"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/health", process=streamer)
        config = node_config(
            tmp_path, [{"id": "streamer", "url": f"http://127.0.0.1:{port}"}], jobs={"shutdown_grace_seconds": grace}
        )
        node = NodeProcess(config, tmp_path).start()
        words = " ".join(f"w{n}" for n in range(40))  # 40 pieces, 150 ms apart: about 6 s
        request = urllib.request.Request(
            f"{node.url}/api/jobs/stream",
            data=json.dumps({"containers": ["streamer"], "data": words}).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=20) as response:
            job_id = response.readline().decode().strip()
            assert node.process is not None
            term_at = time.monotonic()
            node.process.send_signal(signal.SIGTERM)
            try:
                body = response.read().decode()
            except http.client.IncompleteRead as cut:  # chunked body ended early
                body = cut.partial.decode()
        assert node.process.wait(20) == 0
        stopped_after = time.monotonic() - term_at
        node.start()
        try:
            final = wait_final(node.url, [job_id], deadline_s=5)[job_id]
        finally:
            node.stop()
        if grace == 10.0:
            assert body == words  # not cut off by the shutdown
            assert final["status"] == "success" and final["result"]["output"] == {"output": words}
        else:
            assert body != words and words.startswith(body)
            assert final["status"] == "failed", final
            # The shutdown cut it, not the client: the record says so.
            assert final["result"]["error"] == "the node shut down before the stream ended", final
            assert stopped_after < grace + 3, stopped_after  # not the 6 s the stream wanted
    finally:
        streamer.kill()
        streamer.wait()
