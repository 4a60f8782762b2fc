"""Thread placement on this machine's real CPUs: real threads, a real CPU hog, a real node process."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.thread_placement import Colocation, ProcStats
from tests.support.cluster import wait_for
from tests.support.processes import NodeProcess, node_config

CPUS = frozenset(os.sched_getaffinity(0))
pytestmark = pytest.mark.skipif(len(CPUS) < 2, reason="thread placement needs two CPUs (a host fact)")


@contextlib.contextmanager
def waiting_thread() -> Iterator[int]:
    """A thread of this process, made by the calling thread, that waits: its native id."""
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()
    assert thread.native_id is not None
    try:
        yield thread.native_id
    finally:
        stop.set()
        thread.join()


@pytest.fixture
def idle_thread() -> Iterator[int]:
    with waiting_thread() as native_id:
        yield native_id


def test_the_group_shares_one_cpu_and_gets_every_cpu_back_when_stopped(idle_thread: int) -> None:
    group = [threading.get_native_id(), idle_thread]
    colocation = Colocation(group, interval=60)
    assert colocation.start()
    try:
        assert colocation.cpu in CPUS
        assert [os.sched_getaffinity(tid) for tid in group] == [{colocation.cpu}] * 2
    finally:
        colocation.stop()
    assert [os.sched_getaffinity(tid) for tid in group] == [set(CPUS)] * 2


def test_the_group_leaves_a_cpu_another_process_keeps_busy(idle_thread: int) -> None:
    colocation = Colocation([idle_thread], interval=0.2)
    assert colocation.start()
    first = colocation.cpu
    assert first is not None
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        os.sched_setaffinity(hog.pid, {first})
        wait_for(lambda: colocation.cpu != first, 20.0, "the group to leave the CPU the hog keeps busy")
        assert os.sched_getaffinity(idle_thread) == {colocation.cpu}
    finally:
        hog.kill()
        hog.wait()
        colocation.stop()


def test_a_thread_made_by_a_pinned_thread_is_given_every_cpu_back() -> None:
    colocation = Colocation([threading.get_native_id()], interval=60)  # released by hand below
    assert colocation.start()
    try:
        with waiting_thread() as made:  # by the pinned test thread: it inherits the group's one CPU
            assert made in ProcStats().thread_ids()
            assert os.sched_getaffinity(made) == {colocation.cpu}
            assert made in colocation.release_strays()
            assert os.sched_getaffinity(made) == set(CPUS)
            assert os.sched_getaffinity(threading.get_native_id()) == {colocation.cpu}  # the group's own stays
    finally:
        colocation.stop()


def test_proc_stats_see_every_cpu_and_a_threads_own_time() -> None:
    stats = ProcStats()
    before = stats.cpus()
    own_before = stats.thread_ticks([threading.get_native_id()])
    end = time.monotonic() + 0.3
    while time.monotonic() < end:  # 30 ticks' worth of this thread's CPU
        pass
    after = stats.cpus()
    assert set(after) >= CPUS
    assert all(after[cpu].total > before[cpu].total for cpu in CPUS)
    assert stats.thread_ticks([threading.get_native_id()]) - own_before >= 10
    assert stats.current_cpu(threading.get_native_id()) in CPUS


def _masks(pid: int) -> list[set[int]]:
    """The CPUs each thread of a process may run on."""
    return [os.sched_getaffinity(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")]


@pytest.mark.parametrize("colocate", [True, False])
def test_a_node_on_sqlite_keeps_its_loop_and_store_threads_on_one_cpu(tmp_path: Path, colocate: bool) -> None:
    config = node_config(tmp_path, [], server={"colocate_threads": colocate})
    node = NodeProcess(config, tmp_path).start()
    try:
        assert node.process is not None
        pid = node.process.pid
        masks = _masks(pid)
        loop = os.sched_getaffinity(pid)  # the main thread's: the event loop's
        if colocate:
            line = node.wait_for_log("thread placement: event loop and store threads on CPU")
            assert loop == {int(line.rsplit(" ", 1)[1])}
            # The loop, the store's writer and its two readers; the checkpointer (and the watcher) free.
            assert masks.count(loop) >= 4
            assert set(CPUS) in masks
        else:
            assert all(mask == set(CPUS) for mask in masks)
    finally:
        node.stop()
