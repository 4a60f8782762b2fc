"""Logs: JSON lines in a rotating file, readable console lines, the job id on job
lines, and no secret in any line."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.config import LogConfig, parse_config
from node.jobs.context import job_context
from node.logs import REDACTED, ConsoleFormatter, flush_logging, register_secrets
from tests.support.log_setup import node_logging

KEY = "0x" + "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
TX_HASH = "0x" + "ab" * 32  # not a secret: the same shape, and must stay readable


@pytest.fixture
def logfile(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "logs" / "node.log"
    with node_logging(LogConfig(path=str(path), max_file_size=4000, backup_count=2, level="DEBUG")):
        yield path


def lines(path: Path) -> list[dict[str, object]]:
    assert flush_logging(), "the log writer did not catch up"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_json_lines_with_the_job_id(logfile: Path) -> None:
    log = logging.getLogger("node.test")
    log.info("job %s", "success", extra={"job_id": "j-1"})
    with job_context("j-2"):
        logging.getLogger("node.services.gateway").warning("service slow")
    logging.getLogger("node.test").info("not about a job")
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed", extra={"job_id": "j-3"})
    first, second, third, fourth = lines(logfile)
    assert first["message"] == "job success" and first["job_id"] == "j-1" and first["level"] == "INFO"
    assert second["job_id"] == "j-2" and second["logger"] == "node.services.gateway"
    assert "job_id" not in third
    assert fourth["job_id"] == "j-3" and "ValueError: boom" in str(fourth["exception"])


def test_console_lines_are_readable() -> None:
    formatter = ConsoleFormatter()
    record = logging.makeLogRecord(
        {"name": "node.test", "levelname": "INFO", "msg": "job %s", "args": ("success",), "job_id": "j-1"}
    )
    assert formatter.format(record).endswith("INFO    node.test: job success [job j-1]")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.makeLogRecord(
            {"name": "node.test", "levelname": "ERROR", "msg": "failed", "job_id": "j-3", "exc_info": sys.exc_info()}
        )
    first, second, *_ = formatter.format(record).splitlines()
    assert first.endswith("node.test: failed [job j-3]") and second.startswith("Traceback")


def test_no_secret_in_any_line(logfile: Path) -> None:
    config = parse_config(
        {
            "chain": {
                "enabled": True,
                "rpc_url": "http://127.0.0.1:8545",
                "registry_address": "0x" + "1" * 40,
                "wallet": {"private_key": KEY},
            },
            "docker": {"username": "op", "password": "docker-hub-pass-77"},
            "containers": [
                {
                    "id": "llm",
                    "url": "http://127.0.0.1:3000",
                    "bearer": "svc-token-xyz123",
                    "env": {"OPENAI_API_KEY": "sk-live-abcdef123456", "PORT": "3000"},
                }
            ],
        },
        environ={},
    )
    register_secrets(config)
    log = logging.getLogger("node.test")
    log.info("wallet %s ready", KEY)
    log.info("key without prefix, upper case: %s", KEY[2:].upper())
    log.warning("login failed for op/%s", "docker-hub-pass-77")
    log.info("calling llm", extra={"headers": {"Authorization": "Bearer svc-token-xyz123"}})
    log.info("env %s", {"OPENAI_API_KEY": "sk-live-abcdef123456", "PORT": "3000"})
    try:
        raise RuntimeError(f"signing failed with {KEY}")
    except RuntimeError:
        log.exception("delivery failed", extra={"job_id": "j-9"})
    # Secrets the node was not told about, recognised by their context:
    log.info('upstream said {"private_key": "0xfeedface%s"}', "0" * 56)
    log.info("Authorization: Bearer eyJhbGciOi.payload.sig")
    log.info("rpc https://user:s3cr3t-pw@rpc.example/v3")
    log.info("docker login --password=unregistered-pw")
    # What is not secret stays readable.
    log.info("tx %s mined; port 3000", TX_HASH)

    assert flush_logging()
    text = "\n".join(path.read_text() for path in logfile.parent.iterdir())
    for secret in (
        KEY[2:],
        KEY[2:].upper(),
        "docker-hub-pass-77",
        "svc-token-xyz123",
        "sk-live-abcdef123456",
        "feedface",
        "eyJhbGciOi",
        "s3cr3t-pw",
        "unregistered-pw",
    ):
        assert secret not in text, secret
    assert text.count(REDACTED) >= 10
    assert TX_HASH in text and "port 3000" in text
    entries = lines(logfile)
    assert entries[0]["message"] == f"wallet {REDACTED} ready"
    assert "RuntimeError: signing failed with [REDACTED]" in str(entries[5]["exception"])


def test_rotation_by_size_and_backup_count(logfile: Path) -> None:
    log = logging.getLogger("node.test")
    for n in range(300):
        log.info("line %d %s", n, "x" * 40)
    assert flush_logging()
    files = sorted(path.name for path in logfile.parent.iterdir())
    assert files == ["node.log", "node.log.1", "node.log.2"]
    for path in logfile.parent.iterdir():
        assert path.stat().st_size <= 4000
        for line in lines(path):  # every line in every file is whole JSON
            assert str(line["message"]).startswith("line ")
    assert str(lines(logfile)[-1]["message"]).startswith("line 299 ")
