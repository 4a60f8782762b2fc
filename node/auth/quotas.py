"""Per-caller limits: requests and tokens per minute, and a total token budget.

Minutes are fixed windows on the node's clock (minute = floor(unix time / 60)), so
several nodes sharing a store count into the same rows. Tokens are reserved when a
call is admitted (an estimate, e.g. its max_tokens) and settled to what it really
used when it ends, so that concurrent calls cannot overshoot a budget together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

MINUTE = 60.0


@dataclass(frozen=True)
class Limits:
    rpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens per minute
    token_budget: int | None = None  # tokens in total

    @property
    def per_minute(self) -> bool:
        return self.rpm is not None or self.tpm is not None

    @property
    def any(self) -> bool:
        return self.per_minute or self.token_budget is not None


NO_LIMITS = Limits()


class Admission(Enum):
    """What the store answers when asked to admit a call."""

    ADMITTED = "admitted"
    REUSED = "reused"  # the signature was already used
    RPM = "requests_per_minute"
    TPM = "tokens_per_minute"
    TOKEN_BUDGET = "token_budget"


@dataclass(frozen=True)
class Verdict:
    """The store's answer to an admission, and the minute whose window counted the call: the
    call's own minute, or a newer one already stored by a node whose clock is ahead (the call's
    tokens settle there)."""

    admission: Admission
    minute: int | None = None  # admitted with a per-minute limit: the window that counted it

    @property
    def admitted(self) -> bool:
        return self.admission is Admission.ADMITTED


def minute_of(now: float) -> int:
    return int(now // MINUTE)


def seconds_to_next_minute(now: float) -> int:
    """Retry-After for a per-minute limit: whole seconds until the window turns (at least 1)."""
    return max(1, math.ceil((minute_of(now) + 1) * MINUTE - now))
