"""Fixtures for the tests of our Solidity test contracts (tools/chain) on a real anvil."""

import sys
from pathlib import Path

# `tests.support` lives at the repo root; make it importable however pytest was launched
# (plain `pytest` does not put the rootdir on sys.path unless pyproject sets `pythonpath`).
_REPO_ROOT = str(Path(__file__).resolve().parents[2])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from tests.support.chain import (  # noqa: E402, F401  (pytest finds fixtures by name)
    anvil,
    anvil_accounts,
    anvil_w3,
    chain_snapshot,
    infernet_chain,
    infernet_consumer,
)
