"""API keys: a random secret shown once, stored only as its SHA-256.

Why no slow KDF (bcrypt, scrypt, argon2): those protect low-entropy passwords from
guessing after a database leak. A key here is 32 random bytes (256 bits); nobody can
guess it from its hash at any speed, so a plain SHA-256 is as strong and keeps the
per-request check to one hash and one indexed lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from node.auth.quotas import NO_LIMITS, Limits

SECRET_PREFIX = "inode-"
SECRET_BYTES = 32


@dataclass(frozen=True)
class ApiKey:
    name: str
    key_hash: str  # hex sha256 of the secret
    created_at: float
    workspace: str | None = None
    limits: Limits = NO_LIMITS
    expires_at: float | None = None
    revoked_at: float | None = None

    @property
    def caller(self) -> str:
        return key_caller(self.name)

    def state(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"


def key_caller(name: str) -> str:
    """The caller id that quotas and usage records use for a key."""
    return f"key:{name}"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def workspace_matches(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.strip().encode())
