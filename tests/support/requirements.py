"""Missing infrastructure (Docker, anvil, the client venv): a skip on a laptop, a failure in CI.

CI installs all of it (scripts/test.sh), so there a missing part is a broken run, never a
quietly skipped suite.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def unavailable(reason: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"required in CI: {reason}", pytrace=False)
    pytest.skip(reason)
