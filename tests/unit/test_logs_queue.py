"""Logging through a queue: the caller only tags and enqueues; one writer thread redacts
(once), formats and writes. Real handlers, real files, real threads."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import node.logs as logs
from node.config import LogConfig
from node.jobs.context import job_context
from node.logs import REDACTED, flush_logging, redact, setup_logging, stop_logging
from tests.support.log_setup import node_logging

SECRET = "hunter2-very-secret-token"
WRITER = "node-log-writer"


def writers() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == WRITER]


@pytest.fixture
def console(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    # setup_logging binds sys.stderr when it runs: replace it first.
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    return stream


@pytest.fixture
def logfile(tmp_path: Path, console: io.StringIO) -> Iterator[Path]:
    path = tmp_path / "logs" / "node.log"
    with node_logging(LogConfig(path=str(path), level="INFO")):
        yield path


def entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_job_line_from_the_loop_has_its_job_id_after_stop(logfile: Path) -> None:
    async def job() -> None:
        with job_context("j-loop"):
            logging.getLogger("node.jobs.queue").info("job %s", "success")
        logging.getLogger("node.jobs.queue").info("between jobs")

    asyncio.run(job())
    stop_logging()  # no flush_logging: stopping must write what is queued
    first, second = entries(logfile)
    assert first["message"] == "job success" and first["job_id"] == "j-loop"
    assert "job_id" not in second
    assert not writers()


def test_secrets_are_redacted_in_both_outputs(logfile: Path, console: io.StringIO) -> None:
    redact.add([SECRET])
    log = logging.getLogger("node.test")
    log.info("token %s", SECRET, extra={"job_id": "j-1", "headers": {"Authorization": SECRET}, "note": SECRET})
    try:
        raise RuntimeError(f"service refused {SECRET}")
    except RuntimeError:
        log.exception("call failed", extra={"job_id": "j-2"})
    log.info("stack", stack_info=True, extra={"marker": SECRET})
    stop_logging()

    file_text = logfile.read_text()
    for text in (file_text, console.getvalue()):
        assert SECRET not in text
    assert "RuntimeError: service refused [REDACTED]" in console.getvalue()
    assert "call failed [job j-2]\nTraceback" in console.getvalue()
    first, second, third = entries(logfile)
    assert first["message"] == f"token {REDACTED}" and first["note"] == REDACTED
    assert SECRET not in str(first["headers"]) and REDACTED in str(first["headers"])
    assert "RuntimeError: service refused [REDACTED]" in second["exception"] and second["job_id"] == "j-2"
    assert third["marker"] == REDACTED


def test_setup_twice_leaves_one_writer_and_one_set_of_handlers(tmp_path: Path, logfile: Path) -> None:
    first = logs._active
    assert first is not None and first.listener.running
    first_handlers = first.listener.handlers
    (first_thread,) = writers()

    second_path = tmp_path / "second.log"
    setup_logging(LogConfig(path=str(second_path), level="INFO"))
    logging.getLogger("node.test").info("to the second file")
    assert flush_logging()

    root = logging.getLogger()
    assert root.handlers == [logs._active] and logs._active is not first
    assert not first.listener.running
    files = [handler for handler in first_handlers if isinstance(handler, logging.FileHandler)]
    assert files and all(handler.stream is None for handler in files)  # closed
    assert not first_thread.is_alive() and len(writers()) == 1  # no thread leak
    assert [entry["message"] for entry in entries(second_path)] == ["to the second file"]
    assert logfile.read_text() == ""


def test_after_stop_lines_are_written_by_the_caller_still_redacted(logfile: Path, console: io.StringIO) -> None:
    redact.add([SECRET])
    stop_logging()
    assert not writers()
    logging.getLogger("node.test").warning("late %s", SECRET, extra={"job_id": "j-late"})
    # Written already: no thread, no flush.
    (entry,) = entries(logfile)
    assert entry["message"] == f"late {REDACTED}" and entry["job_id"] == "j-late"
    assert f"late {REDACTED} [job j-late]" in console.getvalue() and SECRET not in console.getvalue()


def test_no_line_is_lost_when_logging_stops_while_threads_log(logfile: Path) -> None:
    def worker(n: int) -> None:
        for i in range(3000):
            logging.getLogger("node.test").info("w%d %d", n, i)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    stop_logging()  # while the workers log: queued lines drained, later ones written directly
    for thread in threads:
        thread.join()
    messages = [entry["message"] for entry in entries(logfile)]
    assert sorted(messages) == sorted(f"w{n} {i}" for n in range(4) for i in range(3000))


def test_redaction_and_formatting_happen_once_on_the_writer_thread(
    logfile: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, list[tuple[int, str]]] = {"redact": [], "json": [], "console": []}

    def spy(name: str, real: Any) -> Any:
        def call(self_or_text: Any, *args: Any) -> Any:
            text = self_or_text if name == "redact" else args[0].getMessage()
            seen[name].append((threading.get_ident(), text))
            return real(self_or_text, *args)

        return call

    monkeypatch.setattr(logs, "redact", spy("redact", logs.redact))
    monkeypatch.setattr(logs.JsonFormatter, "format", spy("json", logs.JsonFormatter.format))
    monkeypatch.setattr(logs.ConsoleFormatter, "format", spy("console", logs.ConsoleFormatter.format))

    logging.getLogger("node.test").info("job %s", "success", extra={"job_id": "j-1"})
    assert flush_logging()

    caller, (writer,) = threading.get_ident(), writers()
    for name in ("json", "console"):
        assert seen[name] == [(writer.ident, "job success")], name
    messages = [entry for entry in seen["redact"] if entry[1] == "job success"]
    assert messages == [(writer.ident, "job success")]  # once per record, not once per handler
    assert all(thread != caller for thread, _ in seen["redact"])


def test_below_the_level_nothing_is_queued(logfile: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    queued: list[logging.LogRecord] = []
    real = logs._QueueHandler.enqueue

    def enqueue(self: logs._QueueHandler, record: logging.LogRecord) -> None:
        queued.append(record)
        real(self, record)

    monkeypatch.setattr(logs._QueueHandler, "enqueue", enqueue)
    logging.getLogger("node.test").debug("too detailed")
    logging.getLogger("aiohttp.access").info("GET / 200")
    logging.getLogger("node.test").info("kept")
    assert [record.getMessage() for record in queued] == ["kept"]
    assert logging.getLogger("aiohttp.access").level == logging.WARNING


def test_the_line_is_fixed_when_logged(logfile: Path) -> None:
    items = ["a"]
    logging.getLogger("node.test").info("items %s", items)
    items.append("added later")
    assert flush_logging()
    assert entries(logfile)[0]["message"] == "items ['a']"


def test_a_record_that_cannot_be_redacted_is_replaced_and_the_writer_lives(
    logfile: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = logs.redact

    def fragile(text: str) -> str:
        if "explode" in text:
            raise RuntimeError("regex trouble")
        return real(text)

    monkeypatch.setattr(logs, "redact", fragile)
    logging.getLogger("node.test").info("explode %s", SECRET, extra={"detail": SECRET})
    logging.getLogger("node.test").info("after")
    assert flush_logging()
    first, second = entries(logfile)
    assert first["message"] == "[a log line could not be redacted]" and "detail" not in first
    assert second["message"] == "after"


def test_caplog_keeps_its_own_record(logfile: Path, caplog: pytest.LogCaptureFixture) -> None:
    redact.add([SECRET])
    with caplog.at_level(logging.INFO):
        logging.getLogger("node.test").info("raw %s", SECRET)
        assert flush_logging()
    # The writer rewrote its copy, not the caller's record.
    assert caplog.records[-1].args == (SECRET,)
    assert entries(logfile)[-1]["message"] == f"raw {REDACTED}"


def test_lines_queued_at_exit_are_written(tmp_path: Path) -> None:
    path = tmp_path / "exit.log"
    script = textwrap.dedent(
        f"""
        import logging
        from node.config import LogConfig
        from node.logs import setup_logging
        setup_logging(LogConfig(path={str(path)!r}, level="INFO"))
        for n in range(2000):
            logging.getLogger("node.test").info("line %d", n)
        """
    )
    # No stop_logging in the script: the atexit hook must write the queue out.
    subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, timeout=60)
    assert [entry["message"] for entry in entries(path)] == [f"line {n}" for n in range(2000)]


def test_a_flood_the_writer_cannot_keep_up_with_is_dropped_and_told(
    logfile: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logs, "MAX_QUEUED_LINES", 5)
    gate, holding = threading.Event(), threading.Event()
    real = logs.redact

    def slow(text: str) -> str:  # holds the writer on the first line until the flood is over
        if "first" in text:
            holding.set()
            gate.wait(5)
        return real(text)

    monkeypatch.setattr(logs, "redact", slow)
    log = logging.getLogger("node.test")
    log.info("first")
    # The writer has taken "first" off the queue: the flood alone fills it (else the queue
    # gains room mid-flood and the loss is told in two notices).
    assert holding.wait(5)
    for number in range(100):
        log.info("flood %d", number)
    gate.set()
    assert flush_logging()  # the writer caught up
    log.info("after the flood")
    assert flush_logging()
    messages = [entry["message"] for entry in entries(logfile)]
    assert messages[0] == "first" and messages[-1] == "after the flood"
    floods = [message for message in messages if message.startswith("flood")]
    assert 0 < len(floods) <= 6
    [notice] = [message for message in messages if "dropped" in message]
    assert notice == f"{100 - len(floods)} log lines were dropped: logging could not keep up"
