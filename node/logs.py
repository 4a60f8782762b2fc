"""Logging: JSON lines in the rotating file, readable lines on the terminal.

Off the event loop: the root logger has one handler, which only puts the record
on a queue; a listener thread redacts it, formats it and writes it to the
terminal and the file. The calling thread does just what must happen there: it
reads the job id from the context and merges the message with its arguments.
`stop_logging()` (the node's shutdown, and at exit) writes what is still queued.

Every record about a job carries `job_id`: pass `extra={"job_id": ...}`, or run
inside `node.jobs.context.job_context(job_id)` (the job queue does, so anything
logged while a job runs, down to the service gateway, is tagged).

No secret reaches a log line: the listener rewrites every record once, before
any handler sees it: the message, its arguments, extra fields and exception
text. It removes the secrets the node was configured with (wallet key, Docker
password, service bearer tokens: `register_secrets`) wherever they appear, and
anything that reads as a secret by its context (`Authorization: Bearer ...`, `"private_key": "..."`, `password=...`).
"""

from __future__ import annotations

import atexit
import json
import logging
import logging.handlers
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from node.config import Config, LogConfig
from node.jobs.context import current_job_id

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
REDACTED = "[REDACTED]"
# Lines waiting for the writer thread, at most (~50 µs each to write: ~2 s of backlog).
MAX_QUEUED_LINES = 50_000

# -- the job a log line is about ------------------------------------------------


def _tag_job(record: logging.LogRecord) -> None:
    # Must run on the thread that logs: the contextvar is not visible from the listener.
    if getattr(record, "job_id", None) is None:
        job_id = current_job_id()
        if job_id is not None:
            record.job_id = job_id


# -- secrets --------------------------------------------------------------------

# A secret recognised by what stands before it. The value stops at whitespace,
# a quote, a comma or a closing brace, so JSON and key=value text both work.
_CONTEXT_PATTERNS = (
    # Authorization: Bearer <token> (also inside reprs of header dicts)
    re.compile(r"(?i)(\bbearer\s+)[^\s'\",}]+"),
    re.compile(r"(?i)(\bbasic\s+)[A-Za-z0-9+/=]{8,}"),
    # "private_key": "0x..", password=..., 'api_key': '..'
    re.compile(
        r"(?i)((?:private[_-]?key|priv[_-]?key|password|passwd|secret|api[_-]?key|access[_-]?token|bearer)"
        r"['\"]?\s*[:=]\s*['\"]?)(?!\*\*)[^\s'\",}]+"
    ),
    # credentials in a URL: scheme://user:password@host
    re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+(?=@)"),
)
_HEX = re.compile(r"(?i)^(0x)?[0-9a-f]+$")
# Shorter values would redact ordinary words and numbers all over the log.
MIN_SECRET_LENGTH = 6
# Env keys of services whose values are secrets (API keys handed to a container).
_SECRET_ENV_KEY = re.compile(r"(?i)(key|token|secret|passw|credential|auth)")


class Redactor:
    """Removes secrets from text. Thread-safe: logging may happen from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._exact: re.Pattern[str] | None = None
        self.version = 0  # changes whenever the secrets do (node/secrets.py rebuilds what it derives)

    def add(self, secrets: Iterable[str | None]) -> None:
        with self._lock:
            for secret in secrets:
                if secret and len(secret.strip()) >= MIN_SECRET_LENGTH:
                    self._secrets.add(secret.strip())
            alternatives = []
            # Longest first, so a secret that contains another is removed whole.
            for secret in sorted(self._secrets, key=len, reverse=True):
                if _HEX.match(secret):
                    # A hex key: with or without 0x, in any case.
                    digits = secret[2:] if secret[:2].lower() == "0x" else secret
                    alternatives.append(f"(?:0[xX])?(?i:{re.escape(digits)})")
                else:
                    alternatives.append(re.escape(secret))
            self._exact = re.compile("|".join(alternatives)) if alternatives else None
            self.version += 1

    def clear(self) -> None:
        with self._lock:
            self._secrets.clear()
            self._exact = None
            self.version += 1

    def secrets(self) -> tuple[tuple[str, ...], re.Pattern[str] | None]:
        """The registered secrets and the pattern that matches any of them (None: there are none)."""
        with self._lock:
            return tuple(self._secrets), self._exact

    def exact(self, text: str) -> str:
        """`text` with the registered secrets removed, and nothing else (no guessing by context)."""
        exact = self._exact
        return exact.sub(REDACTED, text) if exact is not None else text

    def __call__(self, text: str) -> str:
        exact = self._exact
        if exact is not None:
            text = exact.sub(REDACTED, text)
        for pattern in _CONTEXT_PATTERNS:
            text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
        return text


redact = Redactor()


def config_secrets(config: Config) -> list[str]:
    """Every value in the configuration that must never be shown."""
    found: list[str | None] = []
    if config.chain.wallet.private_key is not None:
        found.append(config.chain.wallet.private_key.get_secret_value())
    if config.docker.password is not None:
        found.append(config.docker.password.get_secret_value())
    for container in config.containers:
        if container.bearer is not None:
            found.append(container.bearer.get_secret_value())
        found.extend(value for key, value in container.env.items() if _SECRET_ENV_KEY.search(key))
    return [secret for secret in found if secret]


def register_secrets(config: Config) -> None:
    redact.add(config_secrets(config))


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, (int, float, bool)) or value is None:
        return value
    return redact(str(value))


def _merged_message(record: logging.LogRecord) -> str:
    try:
        return record.getMessage()
    except Exception:
        return f"{record.msg} {record.args}"


def _format_exception(record: logging.LogRecord) -> None:
    """The traceback as text, and the traceback itself dropped: the frames it holds
    can change (or be freed) once the caller moves on."""
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    record.exc_info = None


def redact_record(record: logging.LogRecord) -> None:
    """Rewrites the record in place, before any formatter sees it: message, arguments,
    traceback, stack and extra fields."""
    record.msg, record.args = redact(_merged_message(record)), None
    _format_exception(record)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    for key, value in list(record.__dict__.items()):
        if key not in _STANDARD and not key.startswith("_"):
            record.__dict__[key] = _clean(value)


# -- formats --------------------------------------------------------------------


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info or record.exc_text:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(entry, default=str, ensure_ascii=False)


class ConsoleFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def formatMessage(self, record: logging.LogRecord) -> str:
        # The job tag ends the first line, before any traceback.
        line = super().formatMessage(record)
        job_id = getattr(record, "job_id", None)
        return f"{line} [job {job_id}]" if job_id else line


class _RotatingFileHandler(logging.handlers.RotatingFileHandler):
    """The stock handler formats every record twice (size check, then write) and stats
    the file twice per record; this one formats once and stats only when the size
    says it is time to roll (what Python 3.12's shouldRollover does)."""

    _last: tuple[logging.LogRecord, str] | None = None

    def format(self, record: logging.LogRecord) -> str:
        last = self._last
        if last is not None and last[0] is record:
            return last[1]
        text = super().format(record)
        self._last = (record, text)
        return text

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        if self.stream is None:  # opened lazily, or reopened after a failed rollover
            self.stream = self._open()
        if self.maxBytes <= 0:
            return False
        position = self.stream.tell()
        if not position:  # never roll an empty file, however long the line
            return False
        if position + len(self.format(record)) + 1 < self.maxBytes:
            return False
        # bpo-45401: never roll anything but a regular file (/dev/null, a pipe).
        return not (os.path.exists(self.baseFilename) and not os.path.isfile(self.baseFilename))


# -- the queue between the loggers and the writers --------------------------------


class _Flush:
    """A marker put on the queue: the listener sets `done` when it gets there."""

    def __init__(self) -> None:
        self.done = threading.Event()


class _Listener(logging.handlers.QueueListener):
    """The thread that redacts once per record, then lets each handler format and write."""

    _stopping = False

    def __init__(
        self, records: queue.SimpleQueue[Any], *handlers: logging.Handler, respect_handler_level: bool
    ) -> None:
        super().__init__(records, *handlers, respect_handler_level=respect_handler_level)
        self.records = records  # typed: QueueListener types its queue as put-only

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._stopping

    @property
    def stopped(self) -> bool:
        return self._thread is None

    def start(self) -> None:
        super().start()
        assert self._thread is not None
        self._thread.name = "node-log-writer"

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        try:
            redact_record(record)
        except Exception:
            record.msg, record.args = "[a log line could not be redacted]", None
            record.exc_text = record.stack_info = None
            for key in [key for key in record.__dict__ if key not in _STANDARD and not key.startswith("_")]:
                del record.__dict__[key]
        return record

    def handle(self, record: logging.LogRecord | _Flush) -> None:
        if isinstance(record, _Flush):
            record.done.set()
            return
        super().handle(record)

    def stop(self) -> None:
        """Writes everything queued and ends the thread; the handlers stay open. Idempotent."""
        if self._thread is None:
            return
        self._stopping = True  # from now on callers write directly (_QueueHandler.emit)
        super().stop()  # the thread writes everything up to the sentinel; then _thread is None
        self.drain()

    def drain(self) -> None:
        """Writes, on this thread, what is still queued: lines enqueued after the sentinel
        by callers that had just seen `running`."""
        while True:
            try:
                record = self.records.get_nowait()
            except queue.Empty:
                return
            if isinstance(record, logging.LogRecord | _Flush):  # anything else is the stop sentinel
                self.handle(record)

    def close(self) -> None:
        self.stop()
        for handler in self.handlers:
            handler.close()


class _QueueHandler(logging.handlers.QueueHandler):
    """Root's only handler: tag, merge, enqueue. Nothing else happens on the caller's thread."""

    def __init__(self, records: queue.SimpleQueue[Any], listener: _Listener) -> None:
        super().__init__(records)
        self.records = records  # typed: QueueHandler types its queue as put-only
        self.listener = listener
        self.dropped = 0  # lines refused because the queue was full, not yet reported

    def handle(self, record: logging.LogRecord) -> bool:
        # No handler lock: the queue is thread-safe and prepare works on its own copy.
        passed = self.filter(record)
        if passed:
            self.emit(passed if isinstance(passed, logging.LogRecord) else record)  # 3.12+: a filter may swap it
        return bool(passed)

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        # A shallow copy (much cheaper than copy.copy): other handlers on the way
        # (pytest's caplog) keep the record as logged while the listener rewrites ours.
        copy = object.__new__(type(record))
        copy.__dict__.update(record.__dict__)
        _tag_job(copy)
        # Merged now: arguments that are mutated later cannot change the line.
        copy.msg, copy.args = _merged_message(copy), None
        if copy.exc_info:  # rare (errors only): format the traceback while its frames are current
            _format_exception(copy)
        return copy

    def emit(self, record: logging.LogRecord) -> None:
        try:
            prepared = self.prepare(record)
            listener = self.listener
            if listener.running:
                if self.records.qsize() >= MAX_QUEUED_LINES:
                    # A flood the writer cannot keep up with: memory stays bounded, the loss is told.
                    self.dropped += 1
                    return
                if self.dropped:
                    self.enqueue(_dropped_notice(self.dropped))
                    self.dropped = 0
                self.enqueue(prepared)
                if listener.stopped:  # since we looked: its last drain may have missed our line
                    listener.drain()
            else:
                # After stop_logging (shutdown, atexit): a late line is written here,
                # still redacted, rather than lost or left to logging's unredacted last resort.
                listener.handle(prepared)
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        # Closing the handler (setup_logging again, logging.shutdown at exit, code that
        # clears root's handlers) stops its listener and closes the real handlers.
        self.listener.close()
        super().close()


def _dropped_notice(count: int) -> logging.LogRecord:
    return logging.LogRecord(
        __name__, logging.WARNING, __file__, 0, f"{count} log lines were dropped: logging could not keep up", None, None
    )


_active: _QueueHandler | None = None
_lifecycle = threading.Lock()


def _console_handler() -> logging.Handler:
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(ConsoleFormatter())
    return console


def _file_handler(config: LogConfig) -> logging.Handler:
    assert config.path
    Path(config.path).parent.mkdir(parents=True, exist_ok=True)
    handler = _RotatingFileHandler(
        config.path, maxBytes=config.max_file_size, backupCount=config.backup_count, encoding="utf-8"
    )
    handler.setFormatter(JsonFormatter())
    return handler


def setup_logging(config: LogConfig) -> None:
    """Root logs through the queue to the terminal and, with `config.path`, the file.
    Called again, it first stops the previous listener and closes its handlers."""
    global _active
    with _lifecycle:
        root = logging.getLogger()
        if _active is not None and _active not in root.handlers:
            _active.close()  # taken off root by someone else, but maybe still running
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        # On root itself: a record below the level is not even made, let alone queued.
        root.setLevel(config.level)
        handlers = [_console_handler()] + ([_file_handler(config)] if config.path else [])
        records: queue.SimpleQueue[Any] = queue.SimpleQueue()  # never blocks the caller; bounded in emit()
        listener = _Listener(records, *handlers, respect_handler_level=True)
        listener.start()
        _active = _QueueHandler(records, listener)
        root.addHandler(_active)
    # aiohttp's access log is one line per request: too loud for INFO under load.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def stop_logging() -> None:
    """Writes every queued line and stops the listener thread. Idempotent.

    Called on the node's normal shutdown and at interpreter exit. Lines logged after
    it are written on the caller's thread, as before the queue. A SIGKILL skips it:
    the few lines still queued at that moment are lost, which is accepted."""
    with _lifecycle:
        if _active is not None:
            _active.listener.stop()


def flush_logging(timeout: float = 5.0) -> bool:
    """Waits until every line logged so far is written; False if that took longer than `timeout`."""
    listener = _active.listener if _active is not None else None
    if listener is None or not listener.running:
        return True
    marker = _Flush()
    listener.queue.put_nowait(marker)
    return marker.done.wait(timeout)


atexit.register(stop_logging)
