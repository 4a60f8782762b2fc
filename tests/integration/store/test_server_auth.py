"""The auth repository on asyncpg directly (node/store/server_auth.py), on a real PostgreSQL server:
the rules' SQL as asyncpg runs it, and a lost connection as the 503 the rest of the node gives."""

from __future__ import annotations

import pytest

from node.auth.errors import Reason
from node.auth.quotas import Limits
from node.auth.service import Mode
from node.jobs.errors import StoreUnavailable
from node.store.server_auth import _positional
from tests.integration.store.test_auth_repository import T0, Clock, add_key, bearer, node, refusal, signed
from tests.support.postgres import drop_connections, fresh_database


def test_named_parameters_become_asyncpg_positions_once_per_name() -> None:
    sql = "SELECT :a, :b::text, 'key:' || name FROM t WHERE x = :a AND y = :b_c"
    assert _positional(sql) == ("SELECT $1, $2::text, 'key:' || name FROM t WHERE x = $1 AND y = $3", ("a", "b", "b_c"))


async def test_a_connection_the_server_dropped_is_store_unavailable_then_replaced(postgres_server: str) -> None:
    async with fresh_database(postgres_server) as url:
        secret = await add_key(url, "k", Limits(rpm=10))
        async with node(url, Clock()) as service:
            await service.admit(signed(), Mode.SIGNATURES)
            await service.admit(bearer(secret), Mode.KEYS)
            await drop_connections(postgres_server, url)
            with pytest.raises(StoreUnavailable):
                await service.admit(signed(at=T0 + 1), Mode.SIGNATURES)
            # The pool's dropped connections are gone: the next calls work, and the failed one
            # used nothing (its signature is still unused).
            await service.admit(signed(at=T0 + 1), Mode.SIGNATURES)
            ticket = await service.admit(bearer(secret), Mode.KEYS)
            assert ticket.caller.id == "key:k"


async def test_a_quota_refused_by_its_lone_statement_names_the_limit_read_back_in_a_transaction(
    postgres_server: str,
) -> None:
    async with fresh_database(postgres_server) as url:
        secret = await add_key(url, "k", Limits(rpm=2, token_budget=1000))
        async with node(url, Clock()) as service:
            for _ in range(2):
                await service.admit(bearer(secret), Mode.KEYS, 10)
            refused = await refusal(lambda: service.admit(bearer(secret), Mode.KEYS, 10))
            assert refused.reason is Reason.RPM
