"""Every async test here runs on both event loops the node may use: asyncio's and uvloop's."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import pytest


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> Mapping[str, Callable[[], Any]]:
    factories: dict[str, Callable[[], Any]] = {"asyncio": asyncio.new_event_loop}
    try:
        import uvloop
    except ImportError:  # Windows: the node runs on asyncio's loop only
        return factories
    factories["uvloop"] = uvloop.new_event_loop
    return factories
