"""The SQLite hot path: stdlib sqlite3 on worker threads, one hop per operation.

SQLAlchemy over aiosqlite costs several thread round trips and a lot of Python
per statement (measured: ~1.4 ms of CPU for one primary-key read). The hot
operations — the group commit and the reads by id — run here instead: one
writer thread and a small pool of reader threads. Each thread drains what is
queued and answers the event loop with one wake-up for the whole lot, so the
cost per request falls as load rises. The writer joins every commit it finds
queued into one transaction (group commit, with no hop through a task on the
loop). Everything else (migrations, recovery, pruning, listing) keeps using
the SQLAlchemy engine on the same file; WAL lets the connections share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
Work = Callable[[sqlite3.Connection], Any]
_STOP = None
# Checkpoints (copying the WAL back into the database file, with an fsync) run on a
# thread of their own, so that no commit waits for one (they took ~20 ms each, every
# ~100 commits, under load). They run by the WAL's growth, not by the clock: once
# ~CHECKPOINT_AFTER_WRITES writes have gone in since the last one (under load, about as
# often as SQLite's own 1,000-page autocheckpoint), or once the writer has been quiet for
# CHECKPOINT_IDLE_S. A checkpoint a moment after every write made the first commit after
# a pause slow (bench/README.md: the fsync, then a write to the same file, on a busy disk).
# Power-cut exposure (synchronous=NORMAL) stays below the kernel's own ~30 s writeback.
# Should that thread fall behind, the writer checkpoints itself once the WAL holds this
# many pages (~80 MB).
WRITER_AUTOCHECKPOINT_PAGES = 20_000
CHECKPOINT_AFTER_WRITES = 1_000
CHECKPOINT_IDLE_S = 5.0


def connect(path: str, *, read_only: bool = False, autocheckpoint: int | None = None) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions; writes say BEGIN IMMEDIATE / COMMIT.
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    # The same settings as the engine's connections (engine.py): WAL, and
    # synchronous=NORMAL, which keeps every commit across a process crash.
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA busy_timeout=10000")
    if read_only:
        connection.execute("PRAGMA query_only=1")
    if autocheckpoint is not None:
        connection.execute(f"PRAGMA wal_autocheckpoint={int(autocheckpoint)}")
    return connection


def _settle(done: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in done:
        if future.done():  # its caller was cancelled
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


Writes = list[tuple[str, list[dict[str, Any]]]]


class Gate(Protocol):
    """What a gated write waits for: set by a call run before it on the writer (e.g. the admission
    of the request the write belongs to), read on the writer right before the write."""

    @property
    def open(self) -> bool: ...


class GateClosed(Exception):
    """A gated write was not made: its gate was closed when the writer came to it."""


class GroupCommit:
    """Writes (SQL, rows) that must land together; the writer joins queued ones into one transaction.

    With a gate, the writes are made only if the gate is open when the writer comes to them
    (GateClosed otherwise): the call that decides it runs first, in the same round."""

    __slots__ = ("gate", "writes")

    def __init__(self, writes: Writes, gate: Gate | None = None) -> None:
        self.writes = writes
        self.gate = gate

    @property
    def shut(self) -> bool:
        return self.gate is not None and not self.gate.open

    def __call__(self, connection: sqlite3.Connection) -> None:
        if self.shut:
            raise GateClosed
        commit(connection, self.writes)


Call = tuple[asyncio.Future[Any], Work]
CallResult = tuple[asyncio.Future[Any], Any, BaseException | None]


def _merged(groups: Iterable[Writes]) -> Writes:
    """Consecutive writes of the same SQL become one executemany."""
    merged: Writes = []
    for writes in groups:
        for sql, rows in writes:
            if merged and merged[-1][0] == sql:
                merged[-1][1].extend(rows)
            else:
                merged.append((sql, list(rows)))
    return merged


def _run_calls(connection: sqlite3.Connection, calls: list[Call]) -> list[CallResult]:
    """Run calls in order; consecutive group commits share one transaction when they can."""
    outcomes: list[CallResult] = []
    index = 0
    while index < len(calls):
        end = index
        while end < len(calls) and isinstance(calls[end][1], GroupCommit):
            end += 1
        if end - index > 1:
            group: list[tuple[asyncio.Future[Any], GroupCommit]] = calls[index:end]  # type: ignore[assignment]
            # Gates are read now: what decides them ran before (calls run in submission order).
            shut = [work.shut for _, work in group]
            landing = [work.writes for (_, work), closed in zip(group, shut, strict=True) if not closed]
            try:
                if landing:
                    commit(connection, _merged(landing))
                for (future, _), closed in zip(group, shut, strict=True):
                    outcomes.append((future, None, GateClosed() if closed else None))
                index = end
                continue
            except Exception:
                pass  # one by one below: one bad write must not fail its neighbours
        end = max(end, index + 1)
        for future, work in calls[index:end]:
            try:
                outcomes.append((future, work(connection), None))
            except BaseException as error:  # handed to the caller
                outcomes.append((future, None, error))
        index = end
    return outcomes


class _Pool:
    """Threads that each own one connection and take calls from one shared queue.

    Calls made during one turn of the event loop go to the threads as one batch,
    and each thread answers a batch with one wake-up of the loop.
    """

    def __init__(
        self,
        path: str,
        name: str,
        threads: int,
        read_only: bool,
        autocheckpoint: int | None = None,
        after_batch: Callable[[int], None] | None = None,
        drain: bool = False,
    ) -> None:
        self._path = path
        self._drain = drain
        self._read_only = read_only
        self._autocheckpoint = autocheckpoint
        self._after_batch = after_batch
        self._queue: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop, list[Call]] | None] = queue.SimpleQueue()
        self._pending: list[Call] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{index}", daemon=True) for index in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def thread_ids(self) -> list[int]:
        return [thread.native_id for thread in self._threads if thread.native_id is not None]

    def submit(self, work: Work) -> asyncio.Future[Any]:
        if self._closed:
            raise RuntimeError("the store is closed")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._pending:
            self._loop = loop
            loop.call_soon(self._flush, loop)
        self._pending.append((future, work))
        return future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        batch, self._pending = self._pending, []
        if batch:
            self._queue.put((loop, batch))

    def close(self) -> None:
        self._closed = True
        if self._pending and self._loop is not None:  # submitted in this loop turn: run them before stopping
            self._queue.put((self._loop, self._pending))
            self._pending = []
        for _ in self._threads:
            self._queue.put(_STOP)
        for thread in self._threads:
            thread.join(timeout=10)

    def _run(self) -> None:
        connection: sqlite3.Connection | None = None
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    return
                rounds = [item]
                stop = False
                calls_run = 0
                while self._drain:  # take what was queued meanwhile: one transaction, one wake-up
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is _STOP:
                        stop = True
                        break
                    if more[0] is rounds[-1][0]:  # same loop: join the round
                        rounds[-1] = (more[0], rounds[-1][1] + more[1])
                    else:
                        rounds.append(more)
                for loop, calls in rounds:
                    calls_run += len(calls)
                    try:
                        if connection is None:  # at first use: the file may not exist before migrations ran
                            connection = connect(
                                self._path, read_only=self._read_only, autocheckpoint=self._autocheckpoint
                            )
                        outcomes = _run_calls(connection, calls)
                    except BaseException as error:  # could not open the file: every caller hears why
                        outcomes = [(future, None, error) for future, _ in calls]
                    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
                        loop.call_soon_threadsafe(_settle, outcomes)
                if self._after_batch is not None:
                    self._after_batch(calls_run)
                if stop:
                    return
        finally:
            if connection is not None:
                connection.close()


class _Checkpointer:
    """A thread that checkpoints the WAL by its growth or after a quiet spell, never holding up the writer.

    The writer only counts its writes here; it wakes this thread only when enough have
    gone in, so a lone commit after a pause costs no extra wake-up and meets no fresh
    checkpoint. Otherwise the thread looks every CHECKPOINT_IDLE_S.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._pending = 0  # writes since the last checkpoint (approximate: no lock, only a trigger)
        self._last_write = 0.0
        self._wake = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="store-checkpointer", daemon=True)
        self._thread.start()

    def poke(self, writes: int) -> None:
        """Called by the writer after each batch."""
        self._last_write = time.monotonic()
        self._pending += writes
        if self._pending >= CHECKPOINT_AFTER_WRITES:
            self._wake.set()

    def close(self) -> None:
        self._closing = True
        self._wake.set()
        self._thread.join(timeout=10)

    def _due(self) -> bool:
        if self._pending >= CHECKPOINT_AFTER_WRITES:
            return True
        return self._pending > 0 and time.monotonic() - self._last_write >= CHECKPOINT_IDLE_S

    def _run(self) -> None:
        connection: sqlite3.Connection | None = None
        try:
            while True:
                if self._wake.wait(CHECKPOINT_IDLE_S):
                    self._wake.clear()
                if self._closing:
                    return
                if not self._due():
                    continue
                self._pending = 0
                try:
                    if connection is None:
                        connection = connect(self._path)
                    # PASSIVE: copies what it can while the writer goes on appending.
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as error:
                    log.warning("background WAL checkpoint failed (the writer will checkpoint): %s", error)
        finally:
            if connection is not None:
                connection.close()


class SqliteFile:
    """One SQLite database file: a writer thread, a pool of reader threads, a checkpointer."""

    def __init__(self, path: str, readers: int = 2) -> None:
        self.path = path
        self._checkpointer = _Checkpointer(path)
        self._writer = _Pool(
            path,
            "store-writer",
            1,
            read_only=False,
            autocheckpoint=WRITER_AUTOCHECKPOINT_PAGES,
            after_batch=self._checkpointer.poke,
            drain=True,
        )
        self._readers = _Pool(path, "store-reader", readers, read_only=True)
        self._closed = False

    def hot_thread_ids(self) -> list[int]:
        """The native ids of the threads the event loop hands statements to (not the checkpointer)."""
        return self._writer.thread_ids() + self._readers.thread_ids()

    async def write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` on the writer's connection (it manages its own transaction)."""
        return await self._writer.submit(work)

    def submit_write(self, work: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """`write`, submitted now: it runs before any write submitted after it (one writer, in order),
        in the same round when submitted in the same turn of the loop."""
        return self._writer.submit(work)

    async def commit(self, writes: Writes, gate: Gate | None = None) -> None:
        """Commit (SQL, rows) writes in one transaction, possibly together with other callers' commits;
        with `gate`, only if it is open when the writer comes to them (else GateClosed)."""
        await self.submit_commit(writes, gate)

    def submit_commit(self, writes: Writes, gate: Gate | None = None) -> asyncio.Future[None]:
        """`commit`, submitted now (in the same round as the writes submitted in this turn of the loop)."""
        return self._writer.submit(GroupCommit(writes, gate))

    async def read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        return await self._readers.submit(work)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._writer.close()
            self._readers.close()
            self._checkpointer.close()


def commit(connection: sqlite3.Connection, writes: list[tuple[str, list[dict[str, Any]]]]) -> None:
    """One transaction for a batch of (SQL, rows) writes: all of them land, or none."""
    if len(writes) == 1 and len(writes[0][1]) == 1:
        # One statement is its own transaction (autocommit): two fewer round trips
        # through the sqlite3 module, each of which gives up and retakes the GIL.
        connection.execute(writes[0][0], writes[0][1][0])
        return
    connection.execute("BEGIN IMMEDIATE")
    try:
        for sql, rows in writes:
            connection.executemany(sql, rows)
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
