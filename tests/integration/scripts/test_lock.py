"""scripts/lock.sh, as scripts/provision.sh uses it: a wait on the lock is never silent.

A first `make test` once sat three minutes without a word while another provision.sh held the
lock; now the waiter says which lock it waits for and who holds it.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.processes import ROOT

pytestmark = pytest.mark.slow


def test_provision_says_it_waits_for_the_lock_and_who_holds_it(tmp_path: Path) -> None:
    lock = tmp_path / "provision.lock"
    holder = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    os.write(holder, b"pid 4242 (make test, the other session) since 12:00\n")
    output = tmp_path / "provision.out"
    with output.open("wb") as sink:
        waiter = subprocess.Popen(
            [str(ROOT / "scripts" / "provision.sh")],
            env={**os.environ, "PROVISION_LOCK_FILE": str(lock), "PROVISION_SKIP_IMAGES": "1"},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        end = time.monotonic() + 20
        while b"waiting for the lock" not in output.read_bytes():
            assert waiter.poll() is None, output.read_text()
            assert time.monotonic() < end, f"no word while waiting:\n{output.read_text()}"
            time.sleep(0.05)
        said = output.read_text()
        assert f"provision: waiting for the lock {lock} (one provision.sh at a time" in said
        assert "held by pid 4242 (make test, the other session) since 12:00" in said
    finally:
        os.close(holder)  # releases the lock
    waiter.wait(120)
    said = output.read_text()
    assert f"provision: got the lock {lock} after " in said
    # The new holder names itself in the lock file, for whoever waits next.
    assert lock.read_text().startswith(f"pid {waiter.pid} ("), lock.read_text()
    assert "provision.sh" in lock.read_text()
