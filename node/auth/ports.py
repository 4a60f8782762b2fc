"""What the auth domain needs from a store. node/store/sqlite_auth.py and server_auth.py implement
it on SQLite and PostgreSQL (over node/store/auth_sql.py); every check that must hold across nodes is one atomic
statement (or one transaction) there, never read-then-write here."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from node.auth.keys import ApiKey
from node.auth.quotas import Admission, Limits


@dataclass(frozen=True)
class AdmitRequest:
    caller: str
    minute: int
    limits: Limits
    reserve_tokens: int = 0
    # (r‖s, expires_at): consumed first, once; a second use answers REUSED.
    signature: tuple[bytes, float] | None = None


@dataclass(frozen=True)
class UsageRecord:
    job_id: str | None  # None: the call never became a job; only its reservation is returned
    caller: str
    model: str | None
    prompt_tokens: int
    completion_tokens: int
    created_at: float


@dataclass(frozen=True)
class UsageTotal:
    caller: str
    model: str | None
    calls: int
    prompt_tokens: int
    completion_tokens: int


class AuthRepository(Protocol):
    async def find_key(self, key_hash: str) -> ApiKey | None: ...

    async def admit_key(
        self, key_hash: str, request_for: Callable[[ApiKey], AdmitRequest | None]
    ) -> tuple[ApiKey | None, Admission | None]:
        """Find a key and, when `request_for(key)` gives a request, admit it as `admit` does: one
        store hop for a limited key. `request_for` is pure and quick (it may run on a store thread).
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

    async def admit(self, request: AdmitRequest) -> Admission:
        """Consume the signature (if any), then take one request and the reserved tokens
        from the caller's minute and budget, all or nothing."""
        ...

    async def settle(self, caller: str, minute: int, limits: Limits, reserved: int, usage: UsageRecord) -> None:
        """Replace the reservation by the tokens really used, and keep the usage record."""
        ...

    async def usage(self, caller: str | None, since: float | None) -> Sequence[UsageTotal]: ...

    async def prune(self, now: float, before_minute: int) -> int:
        """Forget signatures past their window and minute counters before `before_minute`."""
        ...
