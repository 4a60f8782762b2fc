"""What the two auth repositories (node.auth.ports.AuthRepository) share: the SQL and the rules.

Each rule that must hold across nodes is one statement the database makes atomic:
a used signature is an INSERT … ON CONFLICT DO NOTHING on its primary key (1 row inserted: first use);
a caller's quota (its minute's window and its budget, one row) is INSERT … ON CONFLICT
DO UPDATE … WHERE <under every limit> RETURNING, which PostgreSQL evaluates under the row
lock and SQLite under its single writer. The SQL is the same text for both (SQLite >= 3.35
has RETURNING); only the connection differs: `SqliteAuthRepository` (sqlite_auth.py) runs it
on the SQLite file's hot-path threads (node/store/sqlite.py), one hop; `ServerAuthRepository`
(server_auth.py) on asyncpg connections from the engine's pool.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from node.auth.keys import ApiKey
from node.auth.ports import AdmitRequest, Gate, UsageTotal
from node.auth.quotas import Admission, Limits, Verdict, minute_of
from node.jobs.errors import StoreUnavailable
from node.store.faults import read_failed

log = logging.getLogger(__name__)

T = TypeVar("T")
UNLIMITED = 2**62
# An outage fails every call: one warning per this many seconds says so without flooding the log.
FAILURE_LOG_INTERVAL_S = 10.0

# Every usage record: a finished model call's job row (its `caller`, migration 0012), and the
# records in `auth_usage` (of jobs pruned since, and those written before 0012). A job's record is
# in one or the other, never both (the prune moves it in one transaction: jobs_sql.ARCHIVE_USAGE).
USAGE_RECORDS = (
    "(SELECT caller, model, prompt_tokens, completion_tokens, created_at FROM auth_usage "
    "UNION ALL SELECT caller, model, COALESCE(prompt_tokens, 0), COALESCE(completion_tokens, 0), "
    "COALESCE(finished_at, updated_at) FROM jobs WHERE caller IS NOT NULL) AS usage_records"
)
_KEY_COLUMNS = "name, key_hash, workspace, rpm, tpm, token_budget, created_at, expires_at, revoked_at"
FIND_KEY = f"SELECT {_KEY_COLUMNS} FROM auth_keys WHERE key_hash = :key_hash"
ADD_KEY = (
    f"INSERT INTO auth_keys ({_KEY_COLUMNS}) VALUES (:name, :key_hash, :workspace, :rpm, :tpm, :token_budget, "
    ":created_at, :expires_at, :revoked_at) ON CONFLICT DO NOTHING RETURNING name"
)
LIST_KEYS = (
    f"SELECT {', '.join('k.' + c.strip() for c in _KEY_COLUMNS.split(','))}, "
    "COALESCE(u.tokens, 0) FROM auth_keys k LEFT JOIN (SELECT caller, "
    f"SUM(prompt_tokens + completion_tokens) AS tokens FROM {USAGE_RECORDS} GROUP BY caller) u "
    "ON u.caller = 'key:' || k.name ORDER BY k.created_at"
)
REVOKE_KEY = "UPDATE auth_keys SET revoked_at = :at WHERE name = :name AND revoked_at IS NULL RETURNING name"
# No RETURNING: the count of rows inserted says it (RETURNING cost a fifth of the statement on SQLite).
USE_SIGNATURE = (
    "INSERT INTO auth_signatures (signature, expires_at) VALUES (:signature, :expires_at) "
    "ON CONFLICT (signature) DO NOTHING"
)
# The caller's quota row (auth_quotas): its current minute's window and its budget's total, taken
# together in one upsert, so admission is one statement (no BEGIN/COMMIT without a signature).
# - The window turns when the stored minute is older than the call's: the call opens the new one
#   unchecked (as the first call of a minute always was; limits are >= 1 and a reservation over
#   the tpm is refused before the store). A node whose clock is behind the stored minute counts
#   into the stored (newer) window rather than resetting it: the minute only moves forward.
# - `used` is NULL until the caller is counted against a budget (then its first call is admitted
#   unchecked, as a budget's first row was); callers without one leave it as it is.
# Each (per-minute limits?, budget?) has its own text: each sets and checks only what applies.
_TURNS = "auth_quotas.minute < :minute"
_WINDOW_SET = (
    f"minute = CASE WHEN {_TURNS} THEN :minute ELSE auth_quotas.minute END, "
    f"requests = CASE WHEN {_TURNS} THEN 1 ELSE auth_quotas.requests + 1 END, "
    f"tokens = CASE WHEN {_TURNS} THEN :tokens ELSE auth_quotas.tokens + :tokens END"
)
_UNDER_WINDOW = (
    f"({_TURNS} OR (auth_quotas.requests < :rpm AND auth_quotas.tokens + :tokens <= :tpm "
    "AND auth_quotas.tokens < :tpm))"
)
_BUDGET_SET = "used = COALESCE(auth_quotas.used, 0) + :tokens"
_UNDER_BUDGET = "(auth_quotas.used IS NULL OR (auth_quotas.used + :tokens <= :budget AND auth_quotas.used < :budget))"


def _take_quota_sql(per_minute: bool, budget: bool) -> str:
    values = ("1, :tokens" if per_minute else "0, 0") + (", :tokens" if budget else ", NULL")
    sets = [part for on, part in ((per_minute, _WINDOW_SET), (budget, _BUDGET_SET)) if on]
    checks = [part for on, part in ((per_minute, _UNDER_WINDOW), (budget, _UNDER_BUDGET)) if on]
    return (
        f"INSERT INTO auth_quotas (caller, minute, requests, tokens, used) VALUES (:caller, :minute, {values}) "
        f"ON CONFLICT (caller) DO UPDATE SET {', '.join(sets)} WHERE {' AND '.join(checks)} RETURNING minute"
    )


def _settle_quota_sql(per_minute: bool, budget: bool) -> str:
    """Tokens back into the window only while the row is still in the call's minute; `used` always."""
    if per_minute and budget:
        return (
            "UPDATE auth_quotas SET tokens = CASE WHEN minute = :minute THEN tokens + :delta ELSE tokens END, "
            "used = used + :delta WHERE caller = :caller"
        )
    if per_minute:
        return "UPDATE auth_quotas SET tokens = tokens + :delta WHERE caller = :caller AND minute = :minute"
    return "UPDATE auth_quotas SET used = used + :delta WHERE caller = :caller"


# Keyed by (per-minute limits?, budget?).
TAKE_QUOTA = {(m, b): _take_quota_sql(m, b) for m, b in ((True, True), (True, False), (False, True))}
SETTLE_QUOTA = {(m, b): _settle_quota_sql(m, b) for m, b in ((True, True), (True, False), (False, True))}
READ_QUOTA = "SELECT minute, requests, tokens, used FROM auth_quotas WHERE caller = :caller"
PRUNE_SIGNATURES = "DELETE FROM auth_signatures WHERE expires_at < :now"
# A row that counts no budget (`used` NULL) holds nothing once its minute is over: its caller's next
# call starts a fresh one. Pruned, so that callers seen once (any signing address, when no
# allowlist is set) do not stay forever. A budget's row stays: it is the budget.
PRUNE_QUOTAS = "DELETE FROM auth_quotas WHERE used IS NULL AND minute < :minute"


class Db(Protocol):
    """One connection of either store, as the rules below use it."""

    # True: no other writer changes a row between two statements of this connection (SQLite's one
    # writer), so a read right after a write sees what the write saw, without a transaction.
    one_writer: bool

    def execute(self, sql: str, params: dict[str, Any]) -> list[Any]: ...

    def changes(self, sql: str, params: dict[str, Any]) -> int:
        """Run a write; how many rows it inserted, updated or deleted."""
        ...

    def transaction(self, work: Callable[[Db], T], statements: int = 2) -> T:
        """Run `work` all or nothing; `statements` is how many it runs (one is atomic alone)."""
        ...


class _Refused(Exception):
    def __init__(self, admission: Admission) -> None:
        self.admission = admission


def _shape(limits: Limits) -> tuple[bool, bool]:
    """The key of TAKE_QUOTA and SETTLE_QUOTA: (per-minute limits?, budget?)."""
    return limits.per_minute, limits.token_budget is not None


def _limit(value: int | None) -> int:
    return UNLIMITED if value is None else value


def _take_quota(request: AdmitRequest, db: Db) -> int:
    """Take the call's quota; returns the minute whose window counted it (Verdict.minute)."""
    limits = request.limits
    params = {
        "caller": request.caller,
        "minute": request.minute,
        "tokens": request.reserve_tokens,
        "rpm": _limit(limits.rpm),
        "tpm": _limit(limits.tpm),
        "budget": _limit(limits.token_budget),
    }
    taken = db.execute(TAKE_QUOTA[_shape(limits)], params)
    if not taken:
        # Read in the same transaction: PostgreSQL locks a conflicting row even when the DO UPDATE's
        # WHERE refuses it (SQLite has one writer), so this is the row that refused the call.
        raise _Refused(_refusal(request, db.execute(READ_QUOTA, params)))
    return int(taken[0][0]) if limits.per_minute else request.minute


def _refusal(request: AdmitRequest, rows: list[Any]) -> Admission:
    """Which limit refused the call, from its row as read after the refusal (as the old READ_MINUTE
    did): the window when it is still the call's (or newer) and full, else the budget."""
    limits, tokens = request.limits, request.reserve_tokens
    rpm, tpm = _limit(limits.rpm), _limit(limits.tpm)
    if limits.per_minute:
        if not rows:
            return Admission.TPM
        minute, requests, window_tokens, _ = rows[0]
        if limits.rpm is not None and minute >= request.minute and requests >= rpm:
            return Admission.RPM
        window_full = minute >= request.minute and (window_tokens + tokens > tpm or window_tokens >= tpm)
        if window_full or limits.token_budget is None:
            return Admission.TPM
    return Admission.TOKEN_BUDGET


def _admit(request: AdmitRequest, db: Db) -> Verdict:
    """One statement, or one transaction with the signature's: a call refused over its quota
    leaves its signature unused (it may be sent again once the quota allows; it was never served)."""
    statements = int(request.signature is not None) + int(request.limits.any)
    if statements == 0:
        return Verdict(Admission.ADMITTED, request.minute)
    try:
        minute = db.transaction(lambda db: _take(request, db), statements)
    except _Refused as refused:
        if statements > 1 or db.one_writer or refused.admission is Admission.REUSED:
            return Verdict(refused.admission)
        # A quota refused by a lone statement where other nodes write too: ask again in a
        # transaction, whose re-read sees the very row that refused (PostgreSQL locks it), so the
        # limit named is exact. The common case, admitted, stays one statement.
        try:
            minute = db.transaction(lambda db: _take(request, db), 2)
        except _Refused as again:
            return Verdict(again.admission)
    return Verdict(Admission.ADMITTED, minute)


def _take(request: AdmitRequest, db: Db) -> int:
    if request.signature is not None:
        signature, expires_at = request.signature
        if not db.changes(USE_SIGNATURE, {"signature": signature.hex(), "expires_at": expires_at}):
            raise _Refused(Admission.REUSED)
    return _take_quota(request, db) if request.limits.any else request.minute


def _settle_writes(
    caller: str, minute: int, limits: Limits, reserved: int, used: int
) -> list[tuple[str, list[dict[str, Any]]]]:
    """The (SQL, rows) writes that settle a call's quota: plain writes, nothing read back, so on
    SQLite they join the writer's group commit (with the job's outcome written next to them).
    The usage record is the job's row, written with its outcome (jobs_sql.FINISH)."""
    writes: list[tuple[str, list[dict[str, Any]]]] = []
    delta = used - reserved
    if delta and limits.any:
        writes.append((SETTLE_QUOTA[_shape(limits)], [{"caller": caller, "minute": minute, "delta": delta}]))
    return writes


def _key(row: Sequence[Any]) -> ApiKey:
    return ApiKey(
        name=row[0],
        key_hash=row[1],
        workspace=row[2],
        limits=Limits(rpm=row[3], tpm=row[4], token_budget=row[5]),
        created_at=row[6],
        expires_at=row[7],
        revoked_at=row[8],
    )


def _key_params(key: ApiKey) -> dict[str, Any]:
    return {
        "name": key.name,
        "key_hash": key.key_hash,
        "workspace": key.workspace,
        "rpm": key.limits.rpm,
        "tpm": key.limits.tpm,
        "token_budget": key.limits.token_budget,
        "created_at": key.created_at,
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
    }


class AuthStore:
    """The AuthRepository, less where its work runs: a subclass implements `_write` and `_read`."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._warned_at = -FAILURE_LOG_INTERVAL_S

    async def _write(self, work: Callable[[Db], T]) -> T:
        """Run `work` on a connection that may write (it manages its own transaction)."""
        raise NotImplementedError

    def _submit_write(self, work: Callable[[Db], T]) -> Awaitable[T]:
        """`_write`, submitted now; where the store has no writer that runs writes in order, a task."""
        return asyncio.ensure_future(self._write(work))

    async def _read(self, work: Callable[[Db], T]) -> T:
        raise NotImplementedError

    async def _commit(self, writes: list[tuple[str, list[dict[str, Any]]]]) -> None:
        """Commit plain (SQL, rows) writes in one transaction."""
        raise NotImplementedError

    def _submit_commit(self, writes: list[tuple[str, list[dict[str, Any]]]]) -> Awaitable[None]:
        """`_commit`, submitted now; where the store has no writer that runs writes in order, a task."""
        return asyncio.ensure_future(self._commit(writes))

    def failure(self, error: Exception) -> Exception:
        failed = read_failed(error)
        if isinstance(failed, StoreUnavailable) and time.monotonic() - self._warned_at >= FAILURE_LOG_INTERVAL_S:
            self._warned_at = time.monotonic()
            log.warning("auth: the store cannot admit calls (answered 503): %s", failed.cause)
        return failed

    async def find_key(self, key_hash: str) -> ApiKey | None:
        rows = await self._read(lambda db: db.execute(FIND_KEY, {"key_hash": key_hash}))
        return _key(rows[0]) if rows else None

    def admit_key(
        self, key_hash: str, request_for: Callable[[ApiKey], AdmitRequest | bool], gate: Gate | None = None
    ) -> Awaitable[tuple[ApiKey | None, Verdict | None]]:
        def work(db: Db) -> tuple[ApiKey | None, Verdict | None]:
            rows = db.execute(FIND_KEY, {"key_hash": key_hash})
            if not rows:
                return None, None
            key = _key(rows[0])
            request = request_for(key)
            if isinstance(request, bool):
                verdict = None
                admitted = request
            else:
                verdict = _admit(request, db)
                admitted = verdict.admitted
            if gate is not None:
                gate.open = admitted
            return key, verdict

        # The writer's connection: the lookup and the quota statements in one hop (with the call's
        # job, on SQLite, when its write is gated on `gate`).
        return self._submit_write(work)

    async def add_key(self, key: ApiKey) -> bool:
        return bool(await self._write(lambda db: db.transaction(lambda db: db.execute(ADD_KEY, _key_params(key)))))

    async def list_keys(self) -> list[tuple[ApiKey, int]]:
        rows = await self._read(lambda db: db.execute(LIST_KEYS, {}))
        return [(_key(row), int(row[9])) for row in rows]

    async def revoke_key(self, name: str, at: float) -> bool:
        params = {"name": name, "at": at}
        return bool(await self._write(lambda db: db.transaction(lambda db: db.execute(REVOKE_KEY, params))))

    def admit(self, request: AdmitRequest, gate: Gate | None = None) -> Awaitable[Verdict]:
        def work(db: Db) -> Verdict:
            verdict = _admit(request, db)
            if gate is not None:
                gate.open = verdict.admitted
            return verdict

        return self._submit_write(work)

    def settle(self, caller: str, minute: int, limits: Limits, reserved: int, used: int) -> Awaitable[None]:
        writes = _settle_writes(caller, minute, limits, reserved, used)
        if writes:
            return self._submit_commit(writes)
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def usage(self, caller: str | None, since: float | None) -> list[UsageTotal]:
        where: list[str] = []
        params: dict[str, Any] = {}
        if caller is not None:
            where.append("caller = :caller")
            params["caller"] = caller
        if since is not None:
            where.append("created_at >= :since")
            params["since"] = since
        sql = (
            f"SELECT caller, model, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens) FROM {USAGE_RECORDS}"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " GROUP BY caller, model ORDER BY caller, model"
        )
        rows = await self._read(lambda db: db.execute(sql, params))
        return [UsageTotal(row[0], row[1], int(row[2]), int(row[3]), int(row[4])) for row in rows]

    async def prune(self, now: float) -> int:
        def work(db: Db) -> int:
            removed = len(db.execute(PRUNE_SIGNATURES + " RETURNING signature", {"now": now}))
            return removed + len(db.execute(PRUNE_QUOTAS + " RETURNING caller", {"minute": minute_of(now)}))

        return await self._write(lambda db: db.transaction(work))
