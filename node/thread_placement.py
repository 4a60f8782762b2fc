"""Keeping the node's hot threads together on one CPU: the event loop and the SQLite store's threads.

Every store round is two wake-ups between the loop thread and a store thread. Across CPUs a
wake-up of an idle vCPU costs an interrupt to it: 50-70 µs each way on the Firecracker VMs this
project runs on (haltpoll off), against 4-7 µs for a context switch on one CPU
(bench/README.md, "Thread placement"). The GIL runs one of these threads at a time anyway, so
keeping them on one CPU gives up little: the C parts of an SQLite statement and of a signature
check. The WAL checkpointer is left free: its fsyncs run beside the loop.

A thread pinned for good could sit behind a busy CPU (a model's threads) while another is idle,
so a watcher thread looks every few seconds and moves the group to a CPU that was markedly less
busy than the current one, not counting the group's own use. Stopping gives the threads back
every CPU the process may use. Linux only (sched_setaffinity); elsewhere, or with one allowed CPU, it does nothing.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

# How often the watcher looks, and how much less busy (fraction of one CPU) another CPU must have
# been than the current one, others' use only, for the group to move there.
INTERVAL_S = 2.0
MARGIN = 0.3


@dataclass(frozen=True)
class CpuTicks:
    busy: int
    total: int


class CpuStats(Protocol):
    """What the watcher reads about the machine's CPUs and the group's threads."""

    def cpus(self) -> Mapping[int, CpuTicks]:
        """Cumulative ticks per CPU."""
        ...

    def thread_ticks(self, thread_ids: Iterable[int]) -> int:
        """Cumulative CPU ticks of these threads (of this process)."""
        ...

    def current_cpu(self, thread_id: int) -> int | None:
        """The CPU a thread of this process last ran on."""
        ...

    def thread_ids(self) -> list[int]:
        """Every thread of this process."""
        ...


class Affinity(Protocol):
    def allowed(self) -> frozenset[int]:
        """The CPUs this process may run on (what its threads go back to)."""
        ...

    def get(self, thread_id: int) -> frozenset[int]: ...
    def set(self, thread_id: int, cpus: frozenset[int]) -> None: ...


class ProcStats:
    """CpuStats from /proc (Linux)."""

    def cpus(self) -> dict[int, CpuTicks]:
        with open("/proc/stat", encoding="ascii") as stat:
            lines = stat.readlines()
        ticks: dict[int, CpuTicks] = {}
        for line in lines:
            name, _, rest = line.partition(" ")
            if not name.startswith("cpu") or name == "cpu":
                continue
            # user nice system idle iowait irq softirq steal ...: idle and iowait are the idle ones.
            values = [int(value) for value in rest.split()[:8]]
            idle = values[3] + values[4]
            total = sum(values)
            ticks[int(name[3:])] = CpuTicks(total - idle, total)
        return ticks

    def thread_ticks(self, thread_ids: Iterable[int]) -> int:
        total = 0
        for fields in filter(None, map(_thread_stat, thread_ids)):
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total

    def current_cpu(self, thread_id: int) -> int | None:
        fields = _thread_stat(thread_id)
        return int(fields[36]) if fields else None  # "processor"

    def thread_ids(self) -> list[int]:
        return [int(name) for name in os.listdir("/proc/self/task")]


def _thread_stat(thread_id: int) -> list[str] | None:
    """The fields of /proc/self/task/<id>/stat after the command name (the state is the first)."""
    try:
        with open(f"/proc/self/task/{thread_id}/stat", encoding="ascii", errors="replace") as stat:
            text = stat.read()
    except OSError:  # the thread has ended
        return None
    return text[text.rindex(")") + 2 :].split()


def _process_cpus() -> frozenset[int]:
    try:
        return frozenset(os.sched_getaffinity(0))
    except (OSError, AttributeError):  # not Linux
        return frozenset()


# The threads of every live group in this process (a thread may be in several: apps in one
# process share their caller's thread), which no group's release_strays may touch.
_placed: Counter[int] = Counter()
_groups_lock = threading.Lock()

# Read at import, before any thread is pinned here: threads made by a pinned thread inherit its
# CPU, and a second group (two apps in one process, as in tests) must still see every CPU.
_PROCESS_CPUS = _process_cpus()


class OsAffinity:
    """Affinity through os.sched_setaffinity (Linux)."""

    def allowed(self) -> frozenset[int]:
        return _PROCESS_CPUS

    def get(self, thread_id: int) -> frozenset[int]:
        return frozenset(os.sched_getaffinity(thread_id))

    def set(self, thread_id: int, cpus: frozenset[int]) -> None:
        os.sched_setaffinity(thread_id, cpus)


def choose(
    current: int,
    before: Mapping[int, CpuTicks],
    after: Mapping[int, CpuTicks],
    own_ticks: int,
    allowed: frozenset[int],
    margin: float = MARGIN,
) -> int:
    """The CPU for the group after an interval: the current one, unless another allowed CPU was
    busy at least `margin` of a CPU less than the current one was with others' work (the group's
    own ticks, all spent on the current CPU, do not count)."""

    def others_busy(cpu: int) -> float | None:
        if cpu not in before or cpu not in after:
            return None
        total = after[cpu].total - before[cpu].total
        if total <= 0:
            return None
        busy = after[cpu].busy - before[cpu].busy - (own_ticks if cpu == current else 0)
        return max(0.0, busy / total)

    here = others_busy(current)
    if here is None:
        return current
    best, best_busy = current, here
    for cpu in sorted(allowed - {current}):
        busy = others_busy(cpu)
        if busy is not None and busy < best_busy:
            best, best_busy = cpu, busy
    return best if here - best_busy >= margin else current


class Colocation:
    """Pins a group of threads to one CPU and moves them when another CPU is markedly idler."""

    def __init__(
        self,
        thread_ids: Iterable[int],
        stats: CpuStats | None = None,
        affinity: Affinity | None = None,
        interval: float = INTERVAL_S,
    ) -> None:
        self._threads = list(dict.fromkeys(thread_ids))
        self._stats = stats or ProcStats()
        self._affinity = affinity or OsAffinity()
        self._interval = interval
        self._pinned = False
        self._allowed: frozenset[int] = frozenset()
        self._cpu: int | None = None
        self._cpus_used: set[int] = set()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def cpu(self) -> int | None:
        """The group's CPU; None when it is not pinned."""
        return self._cpu

    def start(self) -> bool:
        """Pin the group to the CPU its first thread is on, and watch; False when there is nothing
        to do (one allowed CPU, or no way to pin threads here)."""
        try:
            self._allowed = self._affinity.allowed()
            if len(self._allowed) < 2 or not self._threads:
                return False
            self._pinned = True
            with _groups_lock:  # before pinning: no other group may take these for strays
                _placed.update(self._threads)
            first = self._stats.current_cpu(self._threads[0])
            cpu = first if first in self._allowed else min(self._allowed)
            self._pin(cpu)
        except (OSError, AttributeError) as error:  # not Linux, or not allowed to
            log.info("thread placement: left to the OS (%s)", error)
            self._restore()
            return False
        self._watcher = threading.Thread(target=self._watch, name="thread-placement", daemon=True)
        self._watcher.start()
        log.info("thread placement: event loop and store threads on CPU %d", cpu)
        return True

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)
            self._watcher = None
        self._restore()

    def _pin(self, cpu: int) -> None:
        for tid in self._threads:
            try:
                self._affinity.set(tid, frozenset({cpu}))
            except ProcessLookupError:  # that thread has ended
                continue
        self._cpu = cpu
        self._cpus_used.add(cpu)

    def release_strays(self) -> list[int]:
        """Give every allowed CPU back to threads of no group that are pinned to a CPU this group
        was on: a thread made by a group thread (an executor's, libuv's resolver's) inherits its
        one CPU, and would take turns with the event loop there. Returns the threads released."""
        with _groups_lock:
            placed = set(_placed)
        released = []
        for tid in self._stats.thread_ids():
            if tid in placed:
                continue
            try:
                mask = self._affinity.get(tid)
                if len(mask) == 1 and mask <= self._cpus_used:
                    self._affinity.set(tid, self._allowed)
                    released.append(tid)
            except OSError:  # that thread has ended
                continue
        return released

    def _restore(self) -> None:
        """Back to every CPU the process may use."""
        if self._pinned:
            for tid in self._threads:
                try:
                    self._affinity.set(tid, self._allowed)
                except OSError:
                    continue
            with _groups_lock:
                _placed.subtract(self._threads)
                for tid in [tid for tid, count in _placed.items() if count <= 0]:
                    del _placed[tid]
        self._pinned = False
        self._cpu = None

    def _watch(self) -> None:
        try:
            # Made by a pinned thread, so pinned too: the watcher itself may run anywhere.
            self._affinity.set(threading.get_native_id(), self._allowed)
            before, own_before = self._stats.cpus(), self._stats.thread_ticks(self._threads)
            while not self._stop.wait(self._interval):
                after, own_after = self._stats.cpus(), self._stats.thread_ticks(self._threads)
                current = self._cpu
                if current is None:
                    return
                cpu = choose(current, before, after, own_after - own_before, self._allowed)
                if cpu != current:
                    self._pin(cpu)
                    log.info("thread placement: CPU %d was busy with other work; moved to CPU %d", current, cpu)
                before, own_before = after, own_after
                released = self.release_strays()
                if released:
                    log.debug("thread placement: threads %s had inherited the group's CPU; released", released)
        except OSError as error:  # e.g. the allowed CPUs changed under the process
            log.warning("thread placement: stopped watching (%s)", error)
