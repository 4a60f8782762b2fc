"""Fixtures for the tests of our Solidity test contracts (tools/chain) on a real anvil."""

from tests.support.chain import (  # noqa: F401  (pytest finds fixtures by name)
    anvil,
    anvil_accounts,
    anvil_w3,
    chain_snapshot,
    infernet_chain,
    infernet_consumer,
)
