"""The placement rule and the group's life, with the machine's CPUs and affinities faked at their ports
(the real ones: tests/integration/test_thread_placement.py)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from node.thread_placement import Colocation, CpuTicks, choose
from tests.support.cluster import wait_for

ALL = frozenset({0, 1, 2})


def ticks(**busy_total: tuple[int, int]) -> dict[int, CpuTicks]:
    return {int(name[3:]): CpuTicks(busy, total) for name, (busy, total) in busy_total.items()}


BEFORE = ticks(cpu0=(0, 0), cpu1=(0, 0), cpu2=(0, 0))


def test_stays_when_no_cpu_is_markedly_idler() -> None:
    after = ticks(cpu0=(50, 100), cpu1=(30, 100), cpu2=(40, 100))
    assert choose(0, BEFORE, after, own_ticks=0, allowed=ALL) == 0  # 0.2 less busy: under the margin


def test_moves_to_the_idlest_cpu_when_others_crowd_the_current_one() -> None:
    after = ticks(cpu0=(95, 100), cpu1=(40, 100), cpu2=(10, 100))
    assert choose(0, BEFORE, after, own_ticks=0, allowed=ALL) == 2


def test_the_groups_own_use_does_not_count_against_its_cpu() -> None:
    # 90 of the current CPU's 95 busy ticks are the group's own: the others use only 0.05 of it.
    after = ticks(cpu0=(95, 100), cpu1=(10, 100), cpu2=(10, 100))
    assert choose(0, BEFORE, after, own_ticks=90, allowed=ALL) == 0


def test_only_allowed_cpus_and_ones_with_figures_are_candidates() -> None:
    after = ticks(cpu0=(95, 100), cpu1=(0, 100), cpu2=(0, 0))  # cpu2: no ticks in the interval
    assert choose(0, BEFORE, after, own_ticks=0, allowed=frozenset({0, 2})) == 0
    assert choose(0, BEFORE, after, own_ticks=0, allowed=ALL) == 1


class FakeStats:
    def __init__(self) -> None:
        self.now = ticks(cpu0=(0, 0), cpu1=(0, 0), cpu2=(0, 0))
        self.own = 0
        self.on = 1
        self.threads: list[int] = []

    def cpus(self) -> Mapping[int, CpuTicks]:
        return dict(self.now)

    def thread_ticks(self, thread_ids: Iterable[int]) -> int:
        return self.own

    def current_cpu(self, thread_id: int) -> int | None:
        return self.on

    def thread_ids(self) -> list[int]:
        return list(self.threads)

    def advance(self, **busy: int) -> None:
        for name, used in busy.items():
            cpu = int(name[3:])
            before = self.now[cpu]
            self.now[cpu] = CpuTicks(before.busy + used, before.total + 100)


class FakeAffinity:
    def __init__(self, allowed: frozenset[int] = ALL) -> None:
        self._allowed = allowed
        self.masks: dict[int, frozenset[int]] = {}

    def allowed(self) -> frozenset[int]:
        return self._allowed

    def get(self, thread_id: int) -> frozenset[int]:
        if thread_id not in self.masks:
            raise ProcessLookupError(thread_id)
        return self.masks[thread_id]

    def set(self, thread_id: int, cpus: frozenset[int]) -> None:
        self.masks[thread_id] = cpus


def test_the_group_is_pinned_where_its_first_thread_runs_and_given_back_every_cpu_when_stopped() -> None:
    stats, affinity = FakeStats(), FakeAffinity()
    colocation = Colocation([11, 12, 13], stats, affinity, interval=60)
    assert colocation.start()
    try:
        assert colocation.cpu == 1
        assert {tid: affinity.masks[tid] for tid in (11, 12, 13)} == {11: {1}, 12: {1}, 13: {1}}
    finally:
        colocation.stop()
    assert {tid: affinity.masks[tid] for tid in (11, 12, 13)} == {11: ALL, 12: ALL, 13: ALL}
    assert set(affinity.masks.values()) == {ALL}  # the watcher's own thread too: it runs anywhere
    assert colocation.cpu is None


def test_the_watcher_moves_the_group_off_a_crowded_cpu() -> None:
    stats, affinity = FakeStats(), FakeAffinity()
    colocation = Colocation([11, 12], stats, affinity, interval=0.02)
    assert colocation.start()
    try:

        def crowded() -> bool:
            stats.advance(cpu0=5, cpu1=99, cpu2=60)  # CPU 1 (the group's) is taken by others
            return colocation.cpu == 0

        wait_for(crowded, 5.0, "the group to leave CPU 1")
        assert (affinity.masks[11], affinity.masks[12]) == ({0}, {0})
    finally:
        colocation.stop()


def test_nothing_is_pinned_with_one_allowed_cpu() -> None:
    affinity = FakeAffinity(frozenset({3}))
    colocation = Colocation([11], FakeStats(), affinity)
    assert not colocation.start()
    colocation.stop()
    assert affinity.masks == {}


def test_threads_that_inherited_the_groups_cpu_get_every_cpu_back() -> None:
    stats, affinity = FakeStats(), FakeAffinity()
    stats.threads = [11, 12, 21, 22, 23, 24]
    colocation = Colocation([11, 12], stats, affinity, interval=60)
    assert colocation.start()
    try:
        # 21: made by a group thread (inherited CPU 1); 22: pinned to CPU 2 by someone else, on
        # purpose; 23: free already; 24: ended meanwhile (no mask to read).
        affinity.masks.update({21: frozenset({1}), 22: frozenset({2}), 23: ALL})
        assert colocation.release_strays() == [21]
        assert (affinity.masks[21], affinity.masks[22], affinity.masks[23]) == (ALL, {2}, ALL)
        assert (affinity.masks[11], affinity.masks[12]) == ({1}, {1})  # the group stays put
    finally:
        colocation.stop()


def test_a_thread_of_another_live_group_is_not_a_stray() -> None:
    stats, affinity = FakeStats(), FakeAffinity()
    stats.threads = [11, 12, 31]
    first = Colocation([11, 12], stats, affinity, interval=60)
    second = Colocation([31], stats, affinity, interval=60)  # also on CPU 1, e.g. a second app
    assert first.start() and second.start()
    try:
        assert first.release_strays() == []
        assert affinity.masks[31] == {1}
        second.stop()
        affinity.masks[31] = frozenset({1})  # its group gone, the thread pinned still: a stray now
        assert first.release_strays() == [31]
    finally:
        first.stop()
        second.stop()


def test_the_watcher_releases_strays_at_each_look() -> None:
    stats, affinity = FakeStats(), FakeAffinity()
    stats.threads = [11, 41]
    colocation = Colocation([11], stats, affinity, interval=0.02)
    assert colocation.start()
    try:
        affinity.masks[41] = frozenset({1})
        wait_for(lambda: affinity.masks[41] == ALL, 5.0, "the stray to be released")
    finally:
        colocation.stop()
