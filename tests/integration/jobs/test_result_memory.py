"""A service answering far more than jobs.max_result_bytes: the job fails naming the
limit, the node's peak memory grows by about the limit, not by the answer, and the
database does not grow by the answer either. A real node process, with its default
limit (16 MiB), and a real service process answering 128 MiB."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.faults.httpcalls import call, wait_final
from tests.support.processes import NodeProcess, node_config, service_process

pytestmark = pytest.mark.slow

MiB = 1024 * 1024
HUGE = 128 * MiB


@pytest.fixture
def hostile_url() -> Iterator[str]:
    """The misbehaving test service (tests/support/hostile_service.py) as a local process."""
    with service_process("hostile") as url:
        yield url


def peak_rss_bytes(pid: int) -> int:
    """VmHWM: the process's peak resident memory so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc status")


def test_a_huge_answer_fails_within_bounded_memory(tmp_path: Path, hostile_url: str) -> None:
    node = NodeProcess(node_config(tmp_path, [{"id": "svc", "url": hostile_url}]), tmp_path).start()
    try:
        assert node.process is not None
        # A small job first, so the baseline includes a warmed-up job path.
        status, _, body = call(f"{node.url}/api/jobs", "POST", {"containers": ["svc"], "data": {"warm": 1}})
        wait_final(node.url, [body["id"]], deadline_s=10)
        before = peak_rss_bytes(node.process.pid)
        ids = []
        for chunked in (False, True):
            status, _, body = call(
                f"{node.url}/api/jobs", "POST", {"containers": ["svc"], "data": {"huge": HUGE, "chunked": chunked}}
            )
            assert status == 200, body
            ids.append(body["id"])
            found = wait_final(node.url, [body["id"]], deadline_s=60)  # one at a time: the peak is one answer's
            job = found[body["id"]]
            assert job["status"] == "failed"
            assert job["result"]["error"] == f"container answer is larger than jobs.max_result_bytes ({16 * MiB} bytes)"
        grown = peak_rss_bytes(node.process.pid) - before
        # Held: at most the limit (16 MiB) and its join; an unbounded read holds the answer twice over.
        assert grown < 64 * MiB, f"peak RSS grew by {grown / MiB:.0f} MiB"
        time.sleep(0.5)
        db = sum(path.stat().st_size for path in tmp_path.glob("node.db*"))
        assert db < 8 * MiB, f"the database holds {db / MiB:.1f} MiB"
    finally:
        node.stop()
