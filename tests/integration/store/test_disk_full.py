"""A full disk under the store: jobs stay unfinished (never lost), a POST gets a JSON 503
naming the cause, /health reports the store degraded, and once space is freed every
job reaches a final state without a restart.

The store lives on a small tmpfs that the test fills for real (tests run as root; on a
machine where mount is not permitted this skips, and fails in CI).
"""

from __future__ import annotations

import errno
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.faults.httpcalls import call, results
from tests.support.processes import NodeProcess, node_config, service_process
from tests.support.requirements import unavailable

pytestmark = pytest.mark.slow

RESULT_BYTES = 1024 * 1024  # each job's answer: the WAL must grow to store it


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if done.returncode != 0:
        unavailable(f"cannot mount a tmpfs to fill (needs root): {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.fixture
def hostile_url() -> Iterator[str]:
    """The misbehaving test service (tests/support/hostile_service.py) as a local process."""
    with service_process("hostile") as url:
        yield url


def fill(disk: Path) -> Path:
    """Write a file until the filesystem has no space left."""
    filler = disk / "filler"
    block = b"\0" * 65536
    with filler.open("wb", buffering=0) as sink:
        try:
            while True:
                sink.write(block)
        except OSError as error:
            assert error.errno == errno.ENOSPC, error
    # Whatever is left is smaller than a block: take it too.
    with filler.open("ab", buffering=0) as sink:
        try:
            while True:
                sink.write(b"\0" * 512)
        except OSError:
            pass
    return filler


def test_a_full_disk_delays_jobs_and_never_loses_them(tmp_path: Path, small_disk: Path, hostile_url: str) -> None:
    config = node_config(tmp_path, [{"id": "svc", "url": hostile_url}])
    config["store"] = {"url": f"sqlite+aiosqlite:///{small_disk / 'node.db'}"}
    node = NodeProcess(config, tmp_path).start()
    try:
        # Jobs in flight when the disk fills: their service answers after the disk is full.
        ids = []
        for _ in range(3):
            job = {"containers": ["svc"], "data": {"huge": RESULT_BYTES, "sleep": 1.5}}
            status, _, body = call(f"{node.url}/api/jobs", "POST", job)
            assert status == 200, body
            ids.append(body["id"])
        filler = fill(small_disk)
        time.sleep(3)  # the answers have come; the store cannot hold them

        found = results(node.url, ids)
        assert [found[job_id]["status"] for job_id in ids] == ["running"] * 3  # not finished, not lost

        status, _, body = call(f"{node.url}/health")
        assert status == 200
        assert body["status"] == "unhealthy"
        assert body["store"]["status"] == "degraded"
        assert "full" in body["store"]["cause"], body

        # A new job cannot be stored: a JSON 503 naming the cause, never a 500.
        status, _, body = call(f"{node.url}/api/jobs", "POST", {"containers": ["svc"], "data": {"pad": "p" * 600_000}})
        assert status == 503, body
        assert body["error"].startswith("The job store cannot write right now: "), body
        assert "full" in body["params"]["cause"]

        filler.unlink()  # space comes back: every job finishes, without a restart
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = results(node.url, ids)
            if all(found[job_id]["status"] != "running" for job_id in ids):
                break
            time.sleep(0.2)
        assert [found[job_id]["status"] for job_id in ids] == ["success"] * 3, [found[i]["result"] for i in ids]
        assert all(len(found[job_id]["result"]["output"]) == RESULT_BYTES for job_id in ids)

        status, _, body = call(f"{node.url}/health")
        assert (status, body) == (200, {"status": "healthy"})
        status, _, body = call(f"{node.url}/api/jobs", "POST", {"containers": ["svc"], "data": {"pad": "p" * 600_000}})
        assert status == 200, body
    finally:
        node.stop()
    log = node.log_text()
    assert "Traceback" not in log, log[-3000:]
