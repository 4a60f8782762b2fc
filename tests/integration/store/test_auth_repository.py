"""The auth rules on a real SQLite file and a real PostgreSQL server (conftest.store_url):
keys, signatures used once (across restarts and across nodes sharing the store), exact quotas
under concurrency, and usage records."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from coincurve import PrivateKey
from sqlalchemy import text

from node.auth.bech32 import address_of
from node.auth.errors import AuthRefused, Forbidden, OverQuota, Reason, Unauthenticated
from node.auth.keys import ApiKey, hash_secret, new_secret
from node.auth.quotas import NO_LIMITS, Limits
from node.auth.service import AuthService, Credentials, Mode
from node.auth.signatures import NS, SignatureSettings, SignatureVerifier
from node.jobs.model import Job, JobOrigin, JobStatus, TokenUsage
from node.store.engine import create_engine, migrate
from node.store.repositories import auth_repository
from tests.support.usage_records import finished_calls

T0 = 1_779_999_980.0  # 20 s into a minute (1_779_999_960 is a multiple of 60)
NODE_ADDRESS = address_of(PrivateKey(bytes.fromhex("33" * 32)).public_key.format())
USER = PrivateKey(bytes.fromhex("11" * 32))


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def node(url: str, clock: Clock, address_limits: Limits = NO_LIMITS) -> AsyncIterator[AuthService]:
    """One node's view of the store: its own engine, repository and service."""
    engine = create_engine(url)
    await migrate(engine)
    verifier = SignatureVerifier(SignatureSettings(address=NODE_ADDRESS))
    try:
        yield AuthService(auth_repository(engine, clock), verifier, address_limits, clock)
    finally:
        await engine.dispose()


async def add_key(url: str, name: str, limits: Limits = NO_LIMITS, **fields: object) -> str:
    secret = new_secret()
    engine = create_engine(url)
    await migrate(engine)
    try:
        key = ApiKey(name, hash_secret(secret), created_at=T0 - 100, limits=limits, **fields)  # type: ignore[arg-type]
        assert await auth_repository(engine).add_key(key)
    finally:
        await engine.dispose()
    return secret


def bearer(secret: str, workspace: str | None = None) -> Credentials:
    return Credentials("203.0.113.5", False, authorization=f"Bearer {secret}", workspace=workspace)


def signed(body: bytes = b'{"a":1}', at: float = T0, key: PrivateKey = USER) -> Credentials:
    timestamp = int(at * NS)
    message = hashlib.sha256(body).hexdigest().encode() + str(timestamp).encode() + NODE_ADDRESS.encode()
    return Credentials(
        "203.0.113.5",
        False,
        authorization=base64.b64encode(key.sign_recoverable(message)[:64]).decode(),
        requester=address_of(key.public_key.format()),
        timestamp=str(timestamp),
        body=body,
    )


async def refusal(call: Callable[[], object]) -> AuthRefused:
    with pytest.raises(AuthRefused) as error:
        await call()  # type: ignore[misc]
    return error.value


async def test_keys_are_found_by_hash_and_revocation_takes_effect_on_every_node(store_url: str) -> None:
    clock = Clock()
    secret = await add_key(store_url, "alice")
    async with node(store_url, clock) as one, node(store_url, clock) as two:
        ticket = await one.admit(bearer(secret), Mode.KEYS)
        assert ticket.caller.id == "key:alice"
        unknown = await refusal(lambda: two.admit(bearer(secret + "x"), Mode.KEYS))
        assert isinstance(unknown, Unauthenticated) and unknown.reason is Reason.UNKNOWN_KEY
        assert secret not in unknown.message
        engine = create_engine(store_url)
        repository = auth_repository(engine)
        assert await repository.revoke_key("alice", T0)
        assert not await repository.revoke_key("alice", T0)  # already revoked
        for service in (one, two):  # no cache: the next call on any node sees it
            revoked = await refusal(lambda service=service: service.admit(bearer(secret), Mode.KEYS))  # type: ignore[misc]
            assert isinstance(revoked, Unauthenticated) and revoked.reason is Reason.REVOKED_KEY
        [(listed, used)] = await repository.list_keys()
        assert listed.name == "alice" and listed.revoked_at == T0 and used == 0
        assert listed.key_hash == hash_secret(secret)
        assert not await repository.add_key(listed)  # a name is never reused
        await engine.dispose()


async def test_expired_keys_and_workspaces(store_url: str) -> None:
    clock = Clock()
    expired = await add_key(store_url, "old", expires_at=T0 - 1)
    scoped = await add_key(store_url, "team", workspace="ws-1")
    async with node(store_url, clock) as service:
        error = await refusal(lambda: service.admit(bearer(expired), Mode.KEYS))
        assert isinstance(error, Unauthenticated) and error.reason is Reason.EXPIRED_KEY
        for workspace in (None, "ws-2", "ws-10"):
            error = await refusal(lambda workspace=workspace: service.admit(bearer(scoped, workspace), Mode.KEYS))  # type: ignore[misc]
            assert isinstance(error, Forbidden) and error.reason is Reason.WRONG_WORKSPACE
        assert (await service.admit(bearer(scoped, "ws-1"), Mode.KEYS)).caller.id == "key:team"
        # No Bearer key where keys are required; a key where only signatures are.
        error = await refusal(lambda: service.admit(Credentials("203.0.113.5", False), Mode.KEYS))
        assert error.reason is Reason.NO_CREDENTIALS and error.status == 401
        error = await refusal(lambda: service.admit(bearer(scoped, "ws-1"), Mode.SIGNATURES))
        assert error.reason is Reason.NO_CREDENTIALS
        # None: loopback callers only.
        error = await refusal(lambda: service.admit(Credentials("203.0.113.5", False), Mode.NONE))
        assert isinstance(error, Forbidden) and error.reason is Reason.NOT_LOOPBACK
        assert (await service.admit(Credentials("127.0.0.1", True), Mode.NONE)).caller.id == "ip:127.0.0.1"


async def test_a_signature_is_accepted_once_across_restarts_and_nodes(store_url: str) -> None:
    clock = Clock()
    request = signed()
    async with node(store_url, clock) as first:
        ticket = await first.admit(request, Mode.SIGNATURES)
        assert ticket.caller.id == f"gonka:{address_of(USER.public_key.format())}"
        again = await refusal(lambda: first.admit(request, Mode.EITHER))
        assert isinstance(again, Unauthenticated) and again.reason is Reason.REUSED
    # A restarted node, and another node on the same store.
    async with node(store_url, clock) as restarted, node(store_url, clock) as other:
        for service in (restarted, other):
            again = await refusal(lambda service=service: service.admit(request, Mode.SIGNATURES))  # type: ignore[misc]
            assert again.reason is Reason.REUSED
        # A fresh signature of the same body still works.
        await other.admit(signed(at=T0 + 0.5), Mode.SIGNATURES)


async def test_concurrent_replays_on_two_nodes_admit_exactly_one(store_url: str) -> None:
    clock = Clock()
    request = signed(b'{"once":true}')
    async with node(store_url, clock) as one, node(store_url, clock) as two:
        outcomes = await asyncio.gather(
            *[(one if index % 2 else two).admit(request, Mode.SIGNATURES) for index in range(20)],
            return_exceptions=True,
        )
    admitted = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
    reasons = {outcome.reason for outcome in outcomes if isinstance(outcome, AuthRefused)}
    assert len(admitted) == 1 and reasons == {Reason.REUSED}


async def test_a_signed_call_refused_over_its_quota_leaves_its_signature_unused(store_url: str) -> None:
    """The signature and the quota are taken in one transaction: a call that was never let in
    may be sent again as it was once the quota allows, and is then accepted once."""
    clock = Clock()
    async with node(store_url, clock, Limits(rpm=1)) as service:
        await service.admit(signed(b'{"first":1}'), Mode.SIGNATURES)
        clock.now = T0 + 1
        later = signed(b'{"second":2}', at=T0 + 1)
        assert (await refusal(lambda: service.admit(later, Mode.SIGNATURES))).reason is Reason.RPM
        clock.now = T0 + 45  # the next minute (T0 is 20 s into one), within the signature's window
        await service.admit(later, Mode.SIGNATURES)
        assert (await refusal(lambda: service.admit(later, Mode.SIGNATURES))).reason is Reason.REUSED


async def test_pruning_forgets_signatures_only_once_they_are_stale(store_url: str) -> None:
    clock = Clock()
    request = signed()
    async with node(store_url, clock) as service:
        await service.admit(request, Mode.SIGNATURES)
        clock.now = T0 + 59
        assert await service.prune() == 0
        assert (await refusal(lambda: service.admit(request, Mode.SIGNATURES))).reason is Reason.REUSED
        clock.now = T0 + 62
        assert await service.prune() >= 1
        # Forgotten, and refused anyway: its timestamp is stale now.
        assert (await refusal(lambda: service.admit(request, Mode.SIGNATURES))).reason is Reason.STALE


async def test_requests_per_minute_are_exact_under_50_concurrent_callers_on_two_nodes(store_url: str) -> None:
    clock = Clock()
    secret = await add_key(store_url, "busy", Limits(rpm=20))
    async with node(store_url, clock) as one, node(store_url, clock) as two:
        outcomes = await asyncio.gather(
            *[(one if index % 2 else two).admit(bearer(secret), Mode.KEYS) for index in range(50)],
            return_exceptions=True,
        )
        refused = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        assert len(outcomes) - len(refused) == 20
        assert all(isinstance(error, OverQuota) and error.reason is Reason.RPM for error in refused), refused
        assert {error.retry_after for error in refused if isinstance(error, OverQuota)} == {40}
        assert "20 requests per minute" in refused[0].args[0]
        # The next minute opens a new window.
        clock.now = T0 + 40
        await one.admit(bearer(secret), Mode.KEYS)


async def test_signing_addresses_get_the_configured_limits(store_url: str) -> None:
    clock = Clock()
    async with node(store_url, clock, Limits(rpm=2)) as service:
        await service.admit(signed(at=T0), Mode.SIGNATURES)
        await service.admit(signed(at=T0 + 0.1), Mode.SIGNATURES)
        error = await refusal(lambda: service.admit(signed(at=T0 + 0.2), Mode.SIGNATURES))
        assert isinstance(error, OverQuota) and error.reason is Reason.RPM
        # Another address has its own count.
        await service.admit(signed(at=T0 + 0.3, key=PrivateKey(bytes.fromhex("44" * 32))), Mode.SIGNATURES)


async def test_token_budget_is_exact_under_50_concurrent_callers(store_url: str) -> None:
    clock = Clock()
    secret = await add_key(store_url, "metered", Limits(token_budget=100))
    async with node(store_url, clock) as one, node(store_url, clock) as two:
        outcomes = await asyncio.gather(
            *[(one if index % 2 else two).admit(bearer(secret), Mode.KEYS, reserve_tokens=7) for index in range(50)],
            return_exceptions=True,
        )
        tickets = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
        refused = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        assert len(tickets) == 100 // 7
        assert all(isinstance(error, OverQuota) and error.reason is Reason.TOKEN_BUDGET for error in refused)
        assert all(isinstance(error, OverQuota) and error.retry_after is None for error in refused)
        # Each call used 5 of its 7: 14 * 5 = 70 used, so 30 are left: 4 more calls of 7.
        for ticket in tickets:
            await one.settle(ticket, 5)
        more = [await one.admit(bearer(secret), Mode.KEYS, reserve_tokens=7) for _ in range(4)]
        error = await refusal(lambda: one.admit(bearer(secret), Mode.KEYS, reserve_tokens=7))
        assert error.reason is Reason.TOKEN_BUDGET
        # A call that reserved nothing is refused once the budget is spent, not before.
        for ticket in more:
            await one.settle(ticket, 7)  # 70 + 28 = 98
        last = await one.admit(bearer(secret), Mode.KEYS)
        await one.settle(last, 5)  # 103: a call may end over the budget
        error = await refusal(lambda: one.admit(bearer(secret), Mode.KEYS))
        assert error.reason is Reason.TOKEN_BUDGET


async def test_tokens_per_minute(store_url: str) -> None:
    clock = Clock()
    secret = await add_key(store_url, "tpm", Limits(tpm=10))
    async with node(store_url, clock) as service:
        error = await refusal(lambda: service.admit(bearer(secret), Mode.KEYS, reserve_tokens=11))
        assert isinstance(error, OverQuota) and error.reason is Reason.TPM
        ticket = await service.admit(bearer(secret), Mode.KEYS, reserve_tokens=6)
        error = await refusal(lambda: service.admit(bearer(secret), Mode.KEYS, reserve_tokens=6))
        assert isinstance(error, OverQuota) and error.reason is Reason.TPM and error.retry_after == 40
        await service.settle(ticket, 2)  # 2 of the 6 used: 8 left this minute
        await service.admit(bearer(secret), Mode.KEYS, reserve_tokens=8)


async def test_a_refused_key_takes_nothing_and_a_limited_key_is_admitted_in_one_store_hop(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    scoped = await add_key(store_url, "scoped", Limits(rpm=1), workspace="ws-1")
    async with node(store_url, clock) as service:
        for workspace in (None, "ws-2", "ws-2"):  # refused by the key's own rules: the minute's one call stays
            error = await refusal(lambda workspace=workspace: service.admit(bearer(scoped, workspace), Mode.KEYS))  # type: ignore[misc]
            assert isinstance(error, Forbidden)
        repository = service._repository
        hops: list[str] = []
        sqlite = getattr(repository, "_file", None)  # the SQLite file's threads (sqlite_auth.py)
        if sqlite is not None:  # count the hand-offs to the store's threads

            def counted(name: str, real: Any) -> Any:
                def call(work: Any) -> Any:
                    hops.append(name)
                    return real(work)

                return call

            for name in ("read", "write", "submit_write", "commit"):
                monkeypatch.setattr(sqlite, name, counted(name, getattr(sqlite, name)))
        ticket = await service.admit(bearer(scoped, "ws-1"), Mode.KEYS)
        assert ticket.caller.id == "key:scoped"
        if sqlite is not None:
            assert hops == ["submit_write"]  # the lookup and the quota together, on the writer
        error = await refusal(lambda: service.admit(bearer(scoped, "ws-1"), Mode.KEYS))
        assert isinstance(error, OverQuota) and error.reason is Reason.RPM


async def test_usage_totals_per_caller_and_model_from_job_rows_and_archived_records(store_url: str) -> None:
    secret = await add_key(store_url, "u")
    assert secret
    now = time.time()
    calls = finished_calls(
        store_url,
        [
            ("a", "key:u", "m1", 3, 4, now - 1000),
            ("b", "key:u", "m1", 1, 1, now - 10),
            ("c", "key:u", "m2", 10, 0, now - 10),
            ("d", "ip:127.0.0.1", "m1", 2, 2, now),
        ],
    )
    engine = create_engine(store_url)
    repository = auth_repository(engine)
    async with calls as jobs:
        async with engine.begin() as connection:  # a record written before migration 0012, in auth_usage
            await connection.execute(
                text(
                    "INSERT INTO auth_usage (job_id, caller, model, prompt_tokens, completion_tokens, created_at) "
                    "VALUES ('old', 'key:u', 'm2', 5, 5, :at)"
                ),
                {"at": now - 2000},
            )
        expected = {
            ("key:u", "m1"): (2, 4, 5),
            ("key:u", "m2"): (2, 15, 5),
            ("ip:127.0.0.1", "m1"): (1, 2, 2),
        }

        async def totals(caller: str | None = None, since: float | None = None) -> dict[tuple[str, str | None], Any]:
            return {
                (t.caller, t.model): (t.calls, t.prompt_tokens, t.completion_tokens)
                for t in await repository.usage(caller, since)
            }

        assert await totals() == expected
        assert set(await totals("key:u")) == {("key:u", "m1"), ("key:u", "m2")}
        assert await totals(None, now - 500) == {
            ("key:u", "m1"): (1, 1, 1),
            ("key:u", "m2"): (1, 10, 0),
            ("ip:127.0.0.1", "m1"): (1, 2, 2),
        }
        [(_, used)] = await repository.list_keys()
        assert used == 29
        # Pruning a job moves its record into auth_usage (the same transaction): nothing lost, nothing twice.
        assert await jobs.prune(now - 500) == 1
        assert await totals() == expected
        assert (await totals(None, now - 1500))[("key:u", "m1")] == (2, 4, 5)  # dated by when the job finished
        async with engine.connect() as connection:
            archived = (await connection.execute(text("SELECT job_id FROM auth_usage ORDER BY job_id"))).scalars().all()
        assert archived == ["a", "old"]
        assert await jobs.prune(time.time() + 1) == 3
        assert await totals() == expected
        [(_, used)] = await repository.list_keys()
        assert used == 29
    await engine.dispose()


async def test_a_recorded_job_never_replaces_a_billed_call(store_url: str) -> None:
    """PUT /api/status upserts by (client, id): a caller reusing its own /v1 job's id must not
    rewrite (or erase) that call's usage record."""
    engine = create_engine(store_url)
    async with finished_calls(store_url, [("billed", "key:u", "m1", 7, 9, time.time())]) as jobs:
        recorded = Job(
            "billed",
            "127.0.0.1",
            ["chat"],
            {},
            origin=JobOrigin.RECORDED,
            status=JobStatus.RUNNING,
            created_at=time.time(),
            updated_at=time.time(),
        )
        await jobs.record(recorded)
        [stored] = await jobs.get_many("127.0.0.1", ["billed"])
        assert (stored.origin, stored.status, stored.usage) == (JobOrigin.MODEL, JobStatus.SUCCESS, TokenUsage(7, 9))
        totals = await auth_repository(engine).usage(None, None)
        assert [(t.caller, t.calls, t.prompt_tokens, t.completion_tokens) for t in totals] == [("key:u", 1, 7, 9)]
    await engine.dispose()


async def _quota_row(url: str, caller: str) -> tuple[Any, ...] | None:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            sql = text("SELECT minute, requests, tokens, used FROM auth_quotas WHERE caller = :caller")
            row = (await connection.execute(sql, {"caller": caller})).first()
    finally:
        await engine.dispose()
    return None if row is None else tuple(row)


async def test_the_window_turns_with_the_minute_and_an_old_calls_tokens_stay_in_its_minute(store_url: str) -> None:
    clock = Clock()
    secret = await add_key(store_url, "turning", Limits(rpm=2, tpm=10))
    minute = int(T0 // 60)
    async with node(store_url, clock) as service:
        old = await service.admit(bearer(secret), Mode.KEYS, reserve_tokens=6)
        await service.admit(bearer(secret), Mode.KEYS, reserve_tokens=1)
        assert (await refusal(lambda: service.admit(bearer(secret), Mode.KEYS))).reason is Reason.RPM
        assert await _quota_row(store_url, "key:turning") == (minute, 2, 7, None)  # no budget: `used` untouched
        clock.now = T0 + 40  # the next minute: the row is overwritten, the count starts again
        await service.admit(bearer(secret), Mode.KEYS, reserve_tokens=9)
        assert await _quota_row(store_url, "key:turning") == (minute + 1, 1, 9, None)
        await service.settle(old, 2)  # 6 reserved, 2 used: that was last minute's
        assert await _quota_row(store_url, "key:turning") == (minute + 1, 1, 9, None)
        error = await refusal(lambda: service.admit(bearer(secret), Mode.KEYS, reserve_tokens=2))
        assert error.reason is Reason.TPM
        await service.admit(bearer(secret), Mode.KEYS, reserve_tokens=1)
        assert (await refusal(lambda: service.admit(bearer(secret), Mode.KEYS))).reason is Reason.RPM


async def test_pruning_forgets_a_callers_row_once_its_minute_is_over_unless_it_counts_a_budget(
    store_url: str,
) -> None:
    clock = Clock()
    windowed = await add_key(store_url, "windowed", Limits(rpm=5))
    budgeted = await add_key(store_url, "budgeted", Limits(rpm=5, token_budget=100))
    minute = int(T0 // 60)
    async with node(store_url, clock) as service:
        await service.admit(bearer(windowed), Mode.KEYS)
        await service.admit(bearer(budgeted), Mode.KEYS, reserve_tokens=7)
        await service.prune()
        assert await _quota_row(store_url, "key:windowed") == (minute, 1, 0, None)  # its minute still runs
        clock.now = T0 + 40  # the next minute
        assert await service.prune() == 1
        assert await _quota_row(store_url, "key:windowed") is None
        assert await _quota_row(store_url, "key:budgeted") == (minute, 1, 7, 7)  # the budget stays
        await service.admit(bearer(windowed), Mode.KEYS)  # starts afresh
        assert await _quota_row(store_url, "key:windowed") == (minute + 1, 1, 0, None)


async def test_a_node_whose_clock_is_behind_counts_into_the_newer_window(store_url: str) -> None:
    """Two nodes on one store, one a second behind across a minute's turn: the one behind must not
    reset the window the other opened (that would let each node admit a full minute's worth), and
    its call settles in the window that counted it."""
    ahead, behind = Clock(T0 + 40.5), Clock(T0 + 39.5)  # 0.5 s into the next minute; 0.5 s before it
    secret = await add_key(store_url, "skewed", Limits(rpm=3, tpm=100))
    minute = int(T0 // 60)
    async with node(store_url, ahead) as one, node(store_url, behind) as two:
        await one.admit(bearer(secret), Mode.KEYS, reserve_tokens=10)
        late = await two.admit(bearer(secret), Mode.KEYS, reserve_tokens=10)
        assert await _quota_row(store_url, "key:skewed") == (minute + 1, 2, 20, None)
        assert late.minute == minute + 1  # the window that counted it, not its node's clock
        await two.settle(late, 2)  # 10 reserved, 2 used: 8 go back to that window
        assert await _quota_row(store_url, "key:skewed") == (minute + 1, 2, 12, None)
        await two.admit(bearer(secret), Mode.KEYS)
        for service in (one, two):
            error = await refusal(lambda service=service: service.admit(bearer(secret), Mode.KEYS))  # type: ignore[misc]
            assert isinstance(error, OverQuota) and error.reason is Reason.RPM
        assert await _quota_row(store_url, "key:skewed") == (minute + 1, 3, 12, None)


async def test_minute_and_budget_are_taken_together_or_not_at_all(store_url: str) -> None:
    clock = Clock()
    secret = await add_key(store_url, "both", Limits(rpm=3, token_budget=10))
    async with node(store_url, clock) as service:
        first = await service.admit(bearer(secret), Mode.KEYS, reserve_tokens=6)
        error = await refusal(lambda: service.admit(bearer(secret), Mode.KEYS, reserve_tokens=6))
        assert isinstance(error, OverQuota) and error.reason is Reason.TOKEN_BUDGET
        minute = int(T0 // 60)
        assert await _quota_row(store_url, "key:both") == (minute, 1, 6, 6)  # the refused call took no request
        await service.admit(bearer(secret), Mode.KEYS, reserve_tokens=1)
        await service.admit(bearer(secret), Mode.KEYS, reserve_tokens=1)
        # Both limits reached: the minute's is named (it opens first).
        error = await refusal(lambda: service.admit(bearer(secret), Mode.KEYS, reserve_tokens=4))
        assert isinstance(error, OverQuota) and error.reason is Reason.RPM
        await service.settle(first, 4)  # 6 reserved, 4 used: both counts lowered
        assert await _quota_row(store_url, "key:both") == (minute, 3, 6, 6)
        clock.now = T0 + 40
        await service.admit(bearer(secret), Mode.KEYS, reserve_tokens=4)  # 6 + 4 = the budget
        error = await refusal(lambda: service.admit(bearer(secret), Mode.KEYS))
        assert isinstance(error, OverQuota) and error.reason is Reason.TOKEN_BUDGET
        assert await _quota_row(store_url, "key:both") == (minute + 1, 1, 4, 10)


async def test_a_budgets_first_call_is_admitted_whatever_it_reserves(store_url: str) -> None:
    # As the first row of a budget always was: the limit applies from the second call on.
    clock = Clock()
    secret = await add_key(store_url, "small", Limits(token_budget=5))
    async with node(store_url, clock) as service:
        await service.admit(bearer(secret), Mode.KEYS, reserve_tokens=8)
        error = await refusal(lambda: service.admit(bearer(secret), Mode.KEYS))
        assert isinstance(error, OverQuota) and error.reason is Reason.TOKEN_BUDGET
        assert await _quota_row(store_url, "key:small") == (int(T0 // 60), 0, 0, 8)  # no window counted
