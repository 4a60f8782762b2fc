"""Waiting in async tests for a condition the code under test reaches on its own."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable


async def until(
    condition: Callable[[], object | Awaitable[object]],
    seconds: float = 2.0,
    interval: float = 0.005,
    what: str = "condition",
) -> None:
    """Poll `condition` (sync or async) until it is truthy; fail the test after `seconds`."""
    for _ in range(max(1, round(seconds / interval))):
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"{what} not reached within {seconds} s")
