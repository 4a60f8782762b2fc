"""SIGKILL the node at random moments under a steady stream of jobs; restart; repeat.

Afterwards: every acknowledged job has a final status, no job reached the
service twice (the service writes down every call it receives), every job that
succeeded reached it exactly once, and the SQLite file passes integrity_check. Runs on SQLite and
on PostgreSQL.

Bounded: FAULT_ROUNDS rounds (default 5) of at most ~2.5 s of load each.
FAULT_SEED replays a run (the seed is printed on failure).
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from node.jobs.desk import RESTART_REASON
from node.jobs.queue import SHUTDOWN_REASON
from tests.integration.faults.httpcalls import call, wait_final
from tests.support.processes import NodeProcess, node_config, service_process

pytestmark = pytest.mark.slow

ROUNDS = int(os.environ.get("FAULT_ROUNDS", "5"))
SEED = int(os.environ.get("FAULT_SEED", str(random.SystemRandom().randrange(2**32))))


class Submitter(threading.Thread):
    """A steady stream of jobs (singles and small batches) until told to stop."""

    def __init__(self, base_url: str, round_no: int, rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.base_url = base_url
        self.round_no = round_no
        self.rng = rng
        self.halt = threading.Event()
        self.acked: dict[str, dict[str, Any]] = {}  # job id -> the data it was sent with
        self.sent = 0

    def _data(self) -> dict[str, Any]:
        self.sent += 1
        # Mostly quick jobs, some long enough to be caught running by the kill.
        return {"marker": f"r{self.round_no}-{self.sent}", "sleep": self.rng.choice([0, 0, 0, 0.05, 0.2, 0.6])}

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                if self.rng.random() < 0.2:
                    items = [self._data() for _ in range(self.rng.randint(2, 4))]
                    status, _, body = call(
                        f"{self.base_url}/api/jobs/batch",
                        "POST",
                        [{"containers": ["slow"], "data": data} for data in items],
                        timeout=3,
                    )
                    if status == 200:
                        for data, answer in zip(items, body, strict=True):
                            if "id" in answer:
                                self.acked[answer["id"]] = data
                else:
                    data = self._data()
                    status, _, body = call(
                        f"{self.base_url}/api/jobs", "POST", {"containers": ["slow"], "data": data}, timeout=3
                    )
                    if status == 200:
                        self.acked[body["id"]] = data
            except OSError:
                pass  # the node died under the request: nothing was acknowledged
            self.halt.wait(0.01)


def _integrity(db: Path) -> str:
    connection = sqlite3.connect(db)
    try:
        return str(connection.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        connection.close()


def test_random_sigkills_under_load_lose_nothing_and_run_nothing_twice(tmp_path: Path, node_store_url: str) -> None:
    rng = random.Random(SEED)
    calls_file = tmp_path / "calls.jsonl"
    acked: dict[str, dict[str, Any]] = {}
    db = tmp_path / "node.db"
    sqlite = node_store_url.startswith("sqlite")
    with service_process("slow", env={"CALLS_FILE": str(calls_file)}) as slow_url:
        config = node_config(
            tmp_path,
            [{"id": "slow", "url": slow_url}],
            jobs={"workers": 4, "queue_size": 200},
            store={"url": node_store_url},
            cluster={"node_id": "node-a"},  # restarts under the same id (PostgreSQL: see test_restart)
        )
        node = NodeProcess(config, tmp_path)
        try:
            for round_no in range(ROUNDS):
                node.start()
                submitter = Submitter(node.url, round_no, rng)
                submitter.start()
                # A random moment: sometimes while recovered jobs still run, sometimes later.
                submitter.halt.wait(rng.uniform(0.1, 2.5))
                node.kill()
                submitter.halt.set()
                submitter.join(10)
                assert not submitter.is_alive()
                acked.update(submitter.acked)
                if sqlite:
                    assert _integrity(db) == "ok", f"round {round_no}, seed {SEED}"
            assert acked, "no job was acknowledged at all"

            node.start()
            final = wait_final(node.url, list(acked), deadline_s=90)
            assert node.stop() == 0
        except BaseException:
            print(f"fault suite seed: FAULT_SEED={SEED}\nnode output tail:\n{node.log_text()[-3000:]}")
            raise

    received = Counter(json.loads(line)["marker"] for line in calls_file.read_text().splitlines())
    twice = {marker: count for marker, count in received.items() if count > 1}
    assert not twice, f"jobs that reached the service more than once (seed {SEED}): {twice}"
    outcomes: Counter[str] = Counter()
    for job_id, data in acked.items():
        result = final[job_id]
        outcomes[result["status"]] += 1
        if result["status"] == "success":
            assert result["result"] == {"container": "slow", "output": data}, (job_id, result)
            assert received[data["marker"]] == 1
        else:
            assert result["status"] == "failed", result
            # Only a crash or a stop may fail a job here, and the reason says which.
            assert result["result"]["error"] in (RESTART_REASON, SHUTDOWN_REASON), result
    assert outcomes["success"] > 0
    if sqlite:
        assert _integrity(db) == "ok"
    print(f"{ROUNDS} kills, {len(acked)} acknowledged jobs: {dict(outcomes)}; seed {SEED}")
