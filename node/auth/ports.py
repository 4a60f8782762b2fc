"""What the auth domain needs from a store. node/store/sqlite_auth.py and server_auth.py implement
it on SQLite and PostgreSQL (over node/store/auth_sql.py); every check that must hold across nodes is one atomic
statement (or one transaction) there, never read-then-write here."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from node.auth.keys import ApiKey
from node.auth.quotas import Limits, Verdict


@dataclass(frozen=True)
class AdmitRequest:
    caller: str
    minute: int
    limits: Limits
    reserve_tokens: int = 0
    # (r‖s, expires_at): consumed first, once; a second use answers REUSED.
    signature: tuple[bytes, float] | None = None


class Gate:
    """Whether an admission let its call in, as the store decides it in the admission's own hop.

    Writes gated on it (the call's job: node/jobs/ports.Gate) are made only when it is open.
    The store opens it; it stays closed when the call is refused or the admission fails. A
    store with one writer running writes in submission order (SQLite) reads it there, so the
    admission and the job's write take one round; another store waits for `decided()`."""

    __slots__ = ("_decision", "open")

    def __init__(self) -> None:
        self.open = False
        self._decision: Awaitable[Any] | None = None

    def deciding(self, decision: Awaitable[Any]) -> None:
        """The store's hop that decides it (set as soon as it is submitted)."""
        self._decision = decision

    async def decided(self) -> None:
        if self._decision is not None:
            with contextlib.suppress(Exception):  # a failed admission leaves it closed
                await asyncio.shield(self._decision)


@dataclass(frozen=True)
class UsageTotal:
    caller: str
    model: str | None
    calls: int
    prompt_tokens: int
    completion_tokens: int


class AuthRepository(Protocol):
    def failure(self, error: Exception) -> Exception:
        """What a failed store hop means to the caller: StoreUnavailable (node/jobs/errors.py, a 503)
        when the store cannot read or write right now, else the error itself."""
        ...

    async def find_key(self, key_hash: str) -> ApiKey | None: ...

    def admit_key(
        self, key_hash: str, request_for: Callable[[ApiKey], AdmitRequest | bool], gate: Gate | None = None
    ) -> Awaitable[tuple[ApiKey | None, Verdict | None]]:
        """Find a key and, when `request_for(key)` gives a request, admit it as `admit` does: one
        store hop. `request_for` is pure and quick (it runs in the store's hop, maybe on its thread);
        True: the key is let in with nothing to take, False: it is not, nothing taken. `gate` opens
        in that hop when the key is let in. Submitted when called, as `admit` is.
        Returns (None, None) for an unknown key, (key, None) when nothing was asked."""
        ...

    async def add_key(self, key: ApiKey) -> bool:
        """False when a key of that name exists (revoked keys keep their name)."""
        ...

    async def list_keys(self) -> list[tuple[ApiKey, int]]:
        """Every key with the tokens it has used so far."""
        ...

    async def revoke_key(self, name: str, at: float) -> bool:
        """False when no active key has that name."""
        ...

    def admit(self, request: AdmitRequest, gate: Gate | None = None) -> Awaitable[Verdict]:
        """Consume the signature (if any), then take one request and the reserved tokens
        from the caller's minute and budget (one row), all or nothing; `gate` opens when admitted.

        Submitted when called (not when awaited): on a store with one writer, a write gated on
        `gate` and submitted after it in the same turn of the loop goes in the same round."""
        ...

    def settle(self, caller: str, minute: int, limits: Limits, reserved: int, used: int) -> Awaitable[None]:
        """Replace the reservation by the tokens really used (`used`), in the window of `minute`
        and in the budget.

        Submitted when called (not when awaited), as `admit` is: a write submitted after it in the
        same turn of the loop (the job's outcome) goes in the same round, after it."""
        ...

    async def usage(self, caller: str | None, since: float | None) -> Sequence[UsageTotal]: ...

    async def prune(self, now: float) -> int:
        """Forget signatures past their window, and the quota rows of callers without a budget whose
        minute is over; returns how many rows went."""
        ...
