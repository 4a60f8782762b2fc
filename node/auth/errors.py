"""Refusals, typed by what the caller should do next, each naming its reason.

`Unauthenticated` (who are you? 401), `Forbidden` (known, but not allowed here: 403),
`OverQuota` (try later, or never: 429). The reason is a stable short code for
logs and /metrics; the message is for the caller and never holds a secret.
"""

from __future__ import annotations

from enum import Enum


class Reason(str, Enum):
    # signatures
    MISSING_HEADER = "missing_header"
    MALFORMED_BASE64 = "malformed_base64"
    WRONG_SIGNATURE_LENGTH = "wrong_signature_length"
    MALFORMED_TIMESTAMP = "malformed_timestamp"
    STALE = "stale"
    FUTURE = "future"
    HIGH_S = "high_s"
    BAD_SIGNATURE = "bad_signature"
    ADDRESS_MISMATCH = "address_mismatch"
    WRONG_TRANSFER_ADDRESS = "wrong_transfer_address"
    REUSED = "reused"
    NOT_ALLOWED = "not_allowed"
    # keys
    NO_CREDENTIALS = "no_credentials"
    UNKNOWN_KEY = "unknown_key"
    REVOKED_KEY = "revoked_key"
    EXPIRED_KEY = "expired_key"
    WRONG_WORKSPACE = "wrong_workspace"
    NOT_LOOPBACK = "not_loopback"
    # quotas
    RPM = "requests_per_minute"
    TPM = "tokens_per_minute"
    TOKEN_BUDGET = "token_budget"


class AuthRefused(Exception):
    """The call is refused; `reason` says why in a word, `message` in a sentence."""

    status = 400

    def __init__(self, reason: Reason, message: str, who: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        # Who was refused, for the log: a key's name or a claimed address; never a secret.
        self.who = who


class Unauthenticated(AuthRefused):
    status = 401


class Forbidden(AuthRefused):
    status = 403


class OverQuota(AuthRefused):
    status = 429

    def __init__(self, reason: Reason, message: str, retry_after: float | None, who: str | None = None) -> None:
        super().__init__(reason, message, who)
        # None: waiting does not help (the total token budget is spent).
        self.retry_after = retry_after
