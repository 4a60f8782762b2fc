"""Job ids: random version-4 UUIDs, never repeated, also across threads."""

from __future__ import annotations

import re
import threading
import uuid

from node.jobs.model import new_job_id

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}\Z")


def test_ids_are_version_4_uuids_in_canonical_text() -> None:
    for _ in range(1000):  # several refills of the random pool
        job_id = new_job_id()
        assert UUID4.match(job_id), job_id
        parsed = uuid.UUID(job_id)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == job_id


def test_ids_never_repeat_within_or_across_threads() -> None:
    found: list[list[str]] = []

    def make() -> None:
        found.append([new_job_id() for _ in range(5000)])

    threads = [threading.Thread(target=make) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    make()
    every = [job_id for ids in found for job_id in ids]
    assert len(every) == len(set(every)) == 25_000
