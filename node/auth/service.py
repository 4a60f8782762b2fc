"""Who is calling, may they, and how much: the one call the HTTP side makes per request.

`AuthService.begin` identifies the caller by the surface's mode (a loopback peer, an
API key, a Gonka signature), then asks the store, in one hop, to consume the signature
and take the caller's quota. The hop is submitted at once and its verdict awaited later,
so that the call's job, written gated on the admission, can take the same store round.
The call it admits ends with `settle`, which gives back to the caller's quota what the call
reserved but did not use. The usage record itself is the call's job row, which names the
caller (`Caller.id`) and holds the tokens, written with the job's outcome.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from node.auth.errors import AuthRefused, Forbidden, OverQuota, Reason, Unauthenticated
from node.auth.keys import ApiKey, hash_secret, workspace_matches
from node.auth.ports import AdmitRequest, AuthRepository, Gate
from node.auth.quotas import NO_LIMITS, Admission, Limits, Verdict, minute_of, seconds_to_next_minute
from node.auth.signatures import NS, SignatureVerifier, SignedRequest


class Mode(str, Enum):
    """How a surface authenticates its callers."""

    NONE = "none"  # nobody is asked who they are: loopback callers only (/v1's default)
    OPEN = "open"  # nobody is asked who they are, from anywhere (/api's default, as the client contract says)
    KEYS = "keys"
    SIGNATURES = "signatures"
    EITHER = "either"  # a key or a signature


@dataclass(frozen=True)
class Credentials:
    """What a request says about its caller; headers as sent (None when absent), the exact body bytes."""

    client_ip: str
    loopback: bool
    authorization: str | None = None
    requester: str | None = None
    timestamp: str | None = None
    transfer_address: str | None = None
    workspace: str | None = None
    body: bytes = b""


@dataclass(frozen=True)
class Caller:
    id: str  # "key:<name>", "gonka:<address>" or "ip:<address>": what quotas and usage are keyed by
    kind: str  # "key", "signature" or "anonymous"
    limits: Limits = NO_LIMITS


@dataclass
class Ticket:
    """An admitted call: settle it when it ends (with 0 tokens if it never reached a model)."""

    caller: Caller
    minute: int
    reserved: int
    settled: bool = field(default=False)


class Admitting:
    """An admission under way: its store hop, if it needs one, was submitted when this was made.

    `gate` (None when no store hop was needed) opens in that hop when the call is let in: the
    call's job may be written gated on it. `ticket()` waits for the verdict: the Ticket, or the
    refusal raised (the same one each time); a hop that failed raises what `failure` makes of its
    error (StoreUnavailable when the store cannot write right now)."""

    __slots__ = ("_decision", "_error", "_failure", "_ticket", "_verdict", "gate")

    def __init__(
        self,
        gate: Gate | None,
        decision: Awaitable[Any] | None = None,
        verdict: Callable[[Any], Ticket] | None = None,
        ticket: Ticket | None = None,
        failure: Callable[[Exception], Exception] | None = None,
    ) -> None:
        self.gate = gate
        self._decision = decision
        self._verdict = verdict
        self._ticket = ticket
        self._failure = failure
        self._error: Exception | None = None
        if gate is not None and decision is not None:
            gate.deciding(decision)

    @classmethod
    def admitted(cls, ticket: Ticket) -> Admitting:
        """Let in without asking the store."""
        return cls(None, ticket=ticket)

    def decided(self) -> Ticket | None:
        """The Ticket once the call is let in (None while undecided, or when refused)."""
        return self._ticket

    async def ticket(self) -> Ticket:
        if self._ticket is not None:
            return self._ticket
        if self._error is not None:
            raise self._error
        assert self._decision is not None and self._verdict is not None
        try:
            # Shielded: a waiter that is cancelled leaves the hop to finish (and the verdict to read).
            self._ticket = self._verdict(await asyncio.shield(self._decision))
        except AuthRefused as refused:
            self._error = refused
            raise
        except Exception as error:
            self._error = self._failure(error) if self._failure is not None else error
            if self._error is error:
                raise
            raise self._error from error
        return self._ticket


def _claimed(refused: AuthRefused, credentials: Credentials) -> AuthRefused:
    """Name an unidentified refused caller by the address it claimed (unverified: it says so)."""
    if refused.who is None and credentials.requester:
        refused.who = f"claimed gonka:{credentials.requester.strip()[:100]}"
    return refused


def _done() -> asyncio.Future[None]:
    done = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done


BEARER = "bearer "
Reserve = int | Callable[[], int]


def _reservation(limits: Limits, reserve: Reserve) -> int:
    """The tokens to hold for the call; the request is only read when a token limit applies."""
    if limits.tpm is None and limits.token_budget is None:
        return 0
    return max(0, reserve() if callable(reserve) else reserve)


def _check_tpm(limits: Limits, reserve_tokens: int) -> None:
    if limits.tpm is not None and reserve_tokens > limits.tpm:
        raise OverQuota(
            Reason.TPM, f"the call may use {reserve_tokens} tokens, over the limit of {limits.tpm} per minute", None
        )


def _key_refusal(key: ApiKey, workspace: str | None, now: float) -> AuthRefused | None:
    state = key.state(now)
    if state != "active":
        reason = Reason.REVOKED_KEY if state == "revoked" else Reason.EXPIRED_KEY
        return Unauthenticated(reason, f"this API key is {state}", key.caller)
    if key.workspace is not None and not workspace_matches(key.workspace, workspace):
        return Forbidden(
            Reason.WRONG_WORKSPACE,
            "this API key belongs to another workspace (see the workspace header)",
            key.caller,
        )
    return None


class AuthService:
    def __init__(
        self,
        repository: AuthRepository,
        verifier: SignatureVerifier | None = None,
        address_limits: Limits = NO_LIMITS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._repository = repository
        self._verifier = verifier
        self._address_limits = address_limits
        self._clock = clock

    def begin(self, credentials: Credentials, mode: Mode, reserve_tokens: Reserve = 0) -> Admitting:
        """Start admitting the call: what needs no store is checked now (raising Unauthenticated
        (401), Forbidden (403) or OverQuota (429)), and the store's hop, if any, is submitted now;
        `Admitting.ticket()` gives the verdict. A job written gated on `Admitting.gate` in the same
        turn of the loop goes in the same store round (on SQLite).

        reserve_tokens: tokens to hold for the call until it settles (e.g. its max_tokens);
        a function is only called when the caller has a token limit."""
        try:
            return self._begin(credentials, mode, reserve_tokens)
        except AuthRefused as refused:
            raise _claimed(refused, credentials) from None

    async def admit(self, credentials: Credentials, mode: Mode, reserve_tokens: Reserve = 0) -> Ticket:
        """`begin`, and wait for the verdict: the Ticket, or the refusal raised."""
        return await self.begin(credentials, mode, reserve_tokens).ticket()

    def admit_loopback(self, client_ip: str, loopback: bool) -> Admitting:
        """Mode.NONE, where nobody is asked who they are: loopback callers only, no store hop
        (as `begin` does, without reading the other credentials)."""
        if not loopback:
            raise Forbidden(
                Reason.NOT_LOOPBACK,
                "this surface serves loopback callers only (the operator has not configured keys or signatures)",
            )
        return Admitting.admitted(Ticket(Caller(f"ip:{client_ip}", "anonymous"), minute_of(self._clock()), 0))

    def _begin(self, credentials: Credentials, mode: Mode, reserve: Reserve) -> Admitting:
        now = self._clock()
        signature: tuple[bytes, float] | None = None
        if mode is Mode.OPEN:
            caller = Caller(f"ip:{credentials.client_ip}", "anonymous")
        elif mode is Mode.NONE:
            return self.admit_loopback(credentials.client_ip, credentials.loopback)
        else:
            authorization = credentials.authorization or ""
            bearer = authorization[: len(BEARER)].lower() == BEARER
            if bearer and mode in (Mode.KEYS, Mode.EITHER):
                secret = authorization[len(BEARER) :].strip()
                return self._begin_key(secret, credentials, now, reserve)
            if mode in (Mode.SIGNATURES, Mode.EITHER) and (credentials.requester or not bearer) and authorization:
                verified = self._signature_verifier().verify(
                    SignedRequest(
                        authorization,
                        credentials.requester,
                        credentials.timestamp,
                        credentials.transfer_address,
                        credentials.body,
                    ),
                    int(now * NS),
                )
                caller = Caller(f"gonka:{verified.address}", "signature", self._address_limits)
                signature = (verified.signature, verified.expires_at)
            else:
                wanted = {
                    Mode.KEYS: "an API key (Authorization: Bearer <key>)",
                    Mode.SIGNATURES: "a Gonka signature (Authorization, X-Requester-Address, X-Timestamp)",
                }.get(mode, "an API key (Authorization: Bearer <key>) or a Gonka signature")
                raise Unauthenticated(Reason.NO_CREDENTIALS, f"this surface needs {wanted}")
        limits = caller.limits
        reserve_tokens = _reservation(limits, reserve)
        _check_tpm(limits, reserve_tokens)
        minute = minute_of(now)
        if signature is None and not limits.any:
            return Admitting.admitted(Ticket(caller, minute, 0))
        gate = Gate()
        decision = self._repository.admit(AdmitRequest(caller.id, minute, limits, reserve_tokens, signature), gate)
        return Admitting(
            gate,
            decision,
            lambda verdict: self._ticket(caller, minute, reserve_tokens, verdict, now),
            failure=self._repository.failure,
        )

    def _ticket(self, caller: Caller, minute: int, reserved: int, verdict: Verdict, now: float) -> Ticket:
        if verdict.admitted:
            # Settled against the window that counted it (a newer one when this node's clock is behind).
            return Ticket(caller, minute if verdict.minute is None else verdict.minute, reserved)
        refusal = self._refusal(verdict.admission, caller.limits, now)
        refusal.who = caller.id
        raise refusal

    def _begin_key(self, secret: str, credentials: Credentials, now: float, reserve: Reserve) -> Admitting:
        """The key's lookup and its quota in one store hop, on the store's writer (so that the
        call's job, gated on the admission, goes in the same round on SQLite). No cache: a key
        revoked on any node is refused from the next request on."""
        if not secret:
            raise Unauthenticated(Reason.UNKNOWN_KEY, "Incorrect API key provided")
        workspace = credentials.workspace
        minute = minute_of(now)
        reserved: list[int] = []

        def request_for(key: ApiKey) -> AdmitRequest | bool:  # in the store's hop: pure checks only
            if _key_refusal(key, workspace, now) is not None:
                return False
            limits = key.limits
            if not limits.any:
                return True
            reserved.append(_reservation(limits, reserve))
            if limits.tpm is not None and reserved[0] > limits.tpm:
                return False  # refused below, without taking anything
            return AdmitRequest(key.caller, minute, limits, reserved[0])

        def verdict(found: tuple[ApiKey | None, Verdict | None]) -> Ticket:
            key, answer = found
            if key is None:
                raise _claimed(Unauthenticated(Reason.UNKNOWN_KEY, "Incorrect API key provided"), credentials)
            refusal = _key_refusal(key, workspace, now)
            if refusal is not None:
                raise refusal
            caller = Caller(key.caller, "key", key.limits)
            if not key.limits.any:
                return Ticket(caller, minute, 0)
            if answer is None:  # only when over the per-minute tokens
                _check_tpm(key.limits, reserved[0] if reserved else _reservation(key.limits, reserve))
                raise RuntimeError("the store admitted nothing for a limited key")  # request_for's rule, broken
            return self._ticket(caller, minute, reserved[0], answer, now)

        gate = Gate()
        decision = self._repository.admit_key(hash_secret(secret), request_for, gate)
        return Admitting(gate, decision, verdict, failure=self._repository.failure)

    def _signature_verifier(self) -> SignatureVerifier:
        if self._verifier is None:  # config validation makes this unreachable
            raise Unauthenticated(Reason.BAD_SIGNATURE, "this node does not accept signed requests")
        return self._verifier

    @staticmethod
    def _refusal(admission: Admission, limits: Limits, now: float) -> AuthRefused:
        if admission is Admission.REUSED:
            return Unauthenticated(Reason.REUSED, "this signature was already used (a replayed request)")
        if admission is Admission.RPM:
            return OverQuota(
                Reason.RPM,
                f"Rate limit reached: {limits.rpm} requests per minute",
                seconds_to_next_minute(now),
            )
        if admission is Admission.TPM:
            return OverQuota(
                Reason.TPM, f"Rate limit reached: {limits.tpm} tokens per minute", seconds_to_next_minute(now)
            )
        return OverQuota(
            Reason.TOKEN_BUDGET,
            f"You exceeded your token budget of {limits.token_budget} tokens",
            None,
        )

    def settle(
        self,
        ticket: Ticket,
        used: int = 0,
    ) -> Awaitable[None]:
        """Settle an admitted call's quota (once) to the tokens it used (prompt and completion; 0 for
        a call that never reached a model): what it reserved but did not use goes back. A caller
        without limits has nothing to settle (its usage record is the job's row, stored with its
        outcome).

        The write is submitted now (a write submitted after it in this turn of the loop goes in
        the same store round); await what is returned."""
        if ticket.settled or not ticket.caller.limits.any:
            ticket.settled = True
            return _done()
        ticket.settled = True
        return self._repository.settle(ticket.caller.id, ticket.minute, ticket.caller.limits, ticket.reserved, used)

    async def prune(self) -> int:
        return await self._repository.prune(self._clock())
