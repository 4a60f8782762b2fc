"""Small blocking HTTP helpers for fault tests (the tests drive real processes)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any


def call(url: str, method: str = "GET", body: Any = None, timeout: float = 10) -> tuple[int, dict[str, str], Any]:
    """(status, headers, decoded JSON body); HTTP errors are answers, not exceptions."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, dict(response.headers), json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), json.loads(error.read() or b"null")


def results(base_url: str, ids: list[str], chunk: int = 100) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for start in range(0, len(ids), chunk):
        query = "&".join(f"id={job_id}" for job_id in ids[start : start + chunk])
        status, _, body = call(f"{base_url}/api/jobs?{query}")
        assert status == 200, body
        found.update({item["id"]: item for item in body})
    return found


def wait_final(base_url: str, ids: list[str], deadline_s: float) -> dict[str, Any]:
    """Poll until every id has a final status; fail naming the stragglers."""
    end = time.monotonic() + deadline_s
    while True:
        found = results(base_url, ids)
        waiting = [job_id for job_id in ids if found.get(job_id, {}).get("status") in (None, "running")]
        if not waiting:
            return found
        if time.monotonic() > end:
            missing = [job_id for job_id in waiting if job_id not in found]
            raise AssertionError(
                f"{len(waiting)} of {len(ids)} jobs not final after {deadline_s}s "
                f"({len(missing)} unknown to the node), e.g. {waiting[:3]}"
            )
        time.sleep(0.1)
