"""Fixtures shared by the integration tests: the PostgreSQL server and a per-test store URL."""

from tests.support.postgres import node_store_url, postgres_server  # noqa: F401  (pytest finds fixtures by name)
