"""A /v1 call's job written gated on the caller's admission, on a real SQLite file and a real
PostgreSQL server (conftest.store_url): the job is written only when the admission lets the
call in (a replay, a spent quota, a bad key never leaves a job), and on SQLite the admission
and the job's write take one round of the store's writer."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

import pytest

from node.auth.errors import AuthRefused, Forbidden, OverQuota, Reason, Unauthenticated
from node.auth.quotas import Limits
from node.auth.service import AuthService, Credentials, Mode
from node.auth.signatures import SignatureSettings, SignatureVerifier
from node.jobs.errors import NotAdmitted, StoreUnavailable
from node.jobs.model import Job, JobOrigin, JobStatus, new_job_id
from node.store import sqlite
from node.store.engine import create_engine, migrate, sqlite_file
from node.store.jobs_sql import JobStore
from node.store.repositories import auth_repository, job_repository
from tests.integration.store.test_auth_repository import NODE_ADDRESS, T0, Clock, add_key, bearer, signed

IP = "203.0.113.5"


@dataclass
class Node:
    auth: AuthService
    jobs: JobStore
    rounds: list[int]  # the SQLite writer's rounds (calls in each); empty on PostgreSQL


@asynccontextmanager
async def node(url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Node]:
    engine = create_engine(url)
    await migrate(engine)
    clock = Clock()
    verifier = SignatureVerifier(SignatureSettings(address=NODE_ADDRESS))
    auth = AuthService(auth_repository(engine, clock), verifier, Limits(), clock)
    jobs = job_repository(engine, "node-a")
    rounds: list[int] = []
    if sqlite_file(engine) is not None:
        run_calls = sqlite._run_calls

        def counted(connection: Any, calls: list[Any]) -> Any:  # one round of a thread (readers' too)
            if not connection.execute("PRAGMA query_only").fetchone()[0]:
                rounds.append(len(calls))
            return run_calls(connection, calls)

        monkeypatch.setattr(sqlite, "_run_calls", counted)
    try:
        yield Node(auth, jobs, rounds)
    finally:
        await jobs.close()
        await engine.dispose()


def model_job() -> Job:
    now = time.time()
    job = Job(
        new_job_id(),
        IP,
        ["chat"],
        {"model": "tiny"},
        origin=JobOrigin.MODEL,
        status=JobStatus.RUNNING,
        created_at=now,
        updated_at=now,
    )
    job.model = "tiny"
    return job


async def call(node: Node, credentials: Credentials, reserve: int = 0) -> tuple[bool, Any]:
    """As the auth middleware and the /v1 handler do: start the admission, then write the job gated
    on it in the same turn of the loop; (whether the job is in the store, the ticket or refusal)."""
    node.rounds.clear()
    admitting = node.auth.begin(credentials, Mode.EITHER, reserve)
    job = model_job()
    with suppress(NotAdmitted):
        await node.jobs.add(job, admitting.gate)
    try:
        verdict: Any = await admitting.ticket()
    except AuthRefused as refused:
        verdict = refused
    stored = bool(await node.jobs.get_many(IP, [job.id]))
    return stored, verdict


async def test_a_job_is_written_only_when_its_admission_lets_the_call_in(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = await add_key(store_url, "plain")
    limited = await add_key(store_url, "limited", Limits(rpm=1, tpm=100, token_budget=1000))
    scoped = await add_key(store_url, "scoped", workspace="ws-1")
    revoked = await add_key(store_url, "revoked", revoked_at=T0 - 1)
    async with node(store_url, monkeypatch) as one:
        on_sqlite = sqlite_file(one.jobs._engine) is not None
        admitted = [
            ("a key without limits", bearer(plain), 0),
            ("a limited key", bearer(limited), 10),
            ("a signature", signed(at=T0), 0),
        ]
        for what, credentials, reserve in admitted:
            stored, ticket = await call(one, credentials, reserve)
            assert stored and not isinstance(ticket, AuthRefused), what
            if on_sqlite:  # the admission (its own transaction) and the job's insert: one round
                assert one.rounds == [2], (what, one.rounds)
        refused: list[tuple[Credentials, int, type[AuthRefused], Reason]] = [
            (bearer(limited), 10, OverQuota, Reason.RPM),  # its one request this minute is taken
            (bearer(plain + "x"), 0, Unauthenticated, Reason.UNKNOWN_KEY),
            (bearer(revoked), 0, Unauthenticated, Reason.REVOKED_KEY),
            (bearer(scoped, "ws-2"), 0, Forbidden, Reason.WRONG_WORKSPACE),
            (signed(at=T0), 0, Unauthenticated, Reason.REUSED),  # a replay
        ]
        for credentials, reserve, kind, reason in refused:
            stored, error = await call(one, credentials, reserve)
            assert not stored, reason
            assert isinstance(error, kind) and error.reason is reason, (reason, error)
            if on_sqlite:
                assert one.rounds == [2], (reason, one.rounds)
    # A new minute, and more tokens than the key may take in one: refused in the store's hop,
    # before any quota statement, and still no job.
    async with node(store_url, monkeypatch) as again:
        again.auth._clock.now += 60  # type: ignore[attr-defined]
        stored, error = await call(again, bearer(limited), 101)
        assert not stored and isinstance(error, OverQuota) and error.reason is Reason.TPM
        stored, ticket = await call(again, bearer(limited), 100)
        assert stored and ticket.reserved == 100


async def test_an_admission_that_fails_in_the_store_writes_no_job(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with node(store_url, monkeypatch) as one:
        repository: Any = one.auth._repository
        submit = repository._submit_write

        def failing(work: Any) -> Any:
            def hop(db: Any) -> Any:  # the store's hop runs, and fails there (the fault injected)
                raise OSError("disk I/O error")

            return submit(hop)

        monkeypatch.setattr(repository, "_submit_write", failing)
        admitting = one.auth.begin(signed(at=T0), Mode.SIGNATURES)
        job = model_job()
        with pytest.raises(NotAdmitted):
            await one.jobs.add(job, admitting.gate)
        with pytest.raises(StoreUnavailable, match="disk I/O error"):  # a 503 on either surface
            await admitting.ticket()
        assert await one.jobs.get_many(IP, [job.id]) == []
