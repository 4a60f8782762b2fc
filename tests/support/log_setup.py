"""Install the node's logging for one test and put the root logger back afterwards."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from node.config import LogConfig
from node.logs import redact, setup_logging, stop_logging


@contextmanager
def node_logging(config: LogConfig) -> Iterator[None]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    setup_logging(config)
    try:
        yield
    finally:
        stop_logging()
        for handler in list(root.handlers):
            root.removeHandler(handler)
            handler.close()
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        redact.clear()
