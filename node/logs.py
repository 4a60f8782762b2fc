"""Logging: JSON lines in the rotating file, readable lines on the terminal.

Every record about a job carries `job_id`: pass `extra={"job_id": ...}`, or run
inside `job_context(job_id)` (the job queue does, so anything logged while a
job runs, down to the service gateway, is tagged).

No secret reaches a log line: a filter on every handler rewrites the message,
its arguments, extra fields and exception text. It removes the secrets the
node was configured with (wallet key, Docker password, service bearer tokens:
`register_secrets`) wherever they appear, and anything that reads as a secret
by its context (`Authorization: Bearer ...`, `"private_key": "..."`, `password=...`).
"""

from __future__ import annotations

import contextvars
import json
import logging
import logging.handlers
import re
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from node.config import Config, LogConfig

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
REDACTED = "[REDACTED]"

# -- the job a log line is about ------------------------------------------------

_job_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("job_id", default=None)


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    token = _job_id.set(job_id)
    try:
        yield
    finally:
        _job_id.reset(token)


class JobIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            job_id = _job_id.get()
            if job_id is not None:
                record.job_id = job_id
        return True


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

    def clear(self) -> None:
        with self._lock:
            self._secrets.clear()
            self._exact = None

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


class RedactingFilter(logging.Filter):
    """Rewrites the record in place, before any formatter sees it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: keep what there is
            message = f"{record.msg} {record.args}"
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD and not key.startswith("_"):
                record.__dict__[key] = _clean(value)
        return True


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


def _guarded(handler: logging.Handler) -> logging.Handler:
    # On the handler, not the logger: logger filters don't see records that
    # propagate up from child loggers (aiohttp, sqlalchemy, ...).
    handler.addFilter(JobIdFilter())
    handler.addFilter(RedactingFilter())
    return handler


def setup_logging(config: LogConfig) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(config.level)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(ConsoleFormatter())
    root.addHandler(_guarded(console))
    if config.path:
        Path(config.path).parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.handlers.RotatingFileHandler(
            config.path, maxBytes=config.max_file_size, backupCount=config.backup_count, encoding="utf-8"
        )
        file_handler.setFormatter(JsonFormatter())
        root.addHandler(_guarded(file_handler))
    # aiohttp's access log is one line per request: too loud for INFO under load.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
