"""Who is calling, may they, and how much: the one call the HTTP side makes per request.

`AuthService.admit` identifies the caller by the surface's mode (a loopback peer, an
API key, a Gonka signature), then asks the store, in one hop, to consume the signature
and take the caller's quota. The call it admits ends with `settle`, which records the
tokens really used (never lost: the usage row is written even when no limit applies).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from node.auth.errors import AuthRefused, Forbidden, OverQuota, Reason, Unauthenticated
from node.auth.keys import ApiKey, hash_secret, workspace_matches
from node.auth.ports import AdmitRequest, AuthRepository, UsageRecord
from node.auth.quotas import NO_LIMITS, Admission, Limits, minute_of, seconds_to_next_minute
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

    async def admit(self, credentials: Credentials, mode: Mode, reserve_tokens: Reserve = 0) -> Ticket:
        """Admit the call or raise Unauthenticated (401), Forbidden (403) or OverQuota (429).

        reserve_tokens: tokens to hold for the call until it settles (e.g. its max_tokens);
        a function is only called when the caller has a token limit."""
        try:
            return await self._admit(credentials, mode, reserve_tokens)
        except AuthRefused as refused:
            if refused.who is None and credentials.requester:
                refused.who = f"claimed gonka:{credentials.requester.strip()[:100]}"  # unverified: say so
            raise

    def admit_loopback(self, client_ip: str, loopback: bool) -> Ticket:
        """Mode.NONE, where nobody is asked who they are: loopback callers only, no store hop.
        (`admit` says the same; this skips reading the credentials.)"""
        if not loopback:
            raise Forbidden(
                Reason.NOT_LOOPBACK,
                "this surface serves loopback callers only (the operator has not configured keys or signatures)",
            )
        return Ticket(Caller(f"ip:{client_ip}", "anonymous"), minute_of(self._clock()), 0)

    async def _admit(self, credentials: Credentials, mode: Mode, reserve: Reserve) -> Ticket:
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
                return await self._admit_key(authorization[len(BEARER) :].strip(), credentials.workspace, now, reserve)
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
            return Ticket(caller, minute, 0)
        admission = await self._repository.admit(AdmitRequest(caller.id, minute, limits, reserve_tokens, signature))
        return self._ticket(caller, minute, reserve_tokens, admission, now)

    def _ticket(self, caller: Caller, minute: int, reserved: int, admission: Admission, now: float) -> Ticket:
        if admission is Admission.ADMITTED:
            return Ticket(caller, minute, reserved)
        refusal = self._refusal(admission, caller.limits, now)
        refusal.who = caller.id
        raise refusal

    async def _admit_key(self, secret: str, workspace: str | None, now: float, reserve: Reserve) -> Ticket:
        """The key's lookup and its quota in one store hop (the store's writer, for a limited key)."""
        if not secret:
            raise Unauthenticated(Reason.UNKNOWN_KEY, "Incorrect API key provided")
        minute = minute_of(now)
        reserved: list[int] = []

        def request_for(key: ApiKey) -> AdmitRequest | None:  # in the store's hop: pure checks only
            limits = key.limits
            if not limits.any or _key_refusal(key, workspace, now) is not None:
                return None
            reserved.append(_reservation(limits, reserve))
            if limits.tpm is not None and reserved[0] > limits.tpm:
                return None  # refused below, without taking anything
            return AdmitRequest(key.caller, minute, limits, reserved[0])

        key, admission = await self._repository.admit_key(hash_secret(secret), request_for)
        if key is None:
            raise Unauthenticated(Reason.UNKNOWN_KEY, "Incorrect API key provided")
        refusal = _key_refusal(key, workspace, now)
        if refusal is not None:
            raise refusal
        caller = Caller(key.caller, "key", key.limits)
        if not key.limits.any:
            return Ticket(caller, minute, 0)
        if admission is None:  # only when over the per-minute tokens
            _check_tpm(key.limits, reserved[0] if reserved else _reservation(key.limits, reserve))
            raise RuntimeError("the store admitted nothing for a limited key")  # request_for's rule, broken
        return self._ticket(caller, minute, reserved[0], admission, now)

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

    async def settle(
        self,
        ticket: Ticket,
        job_id: str | None,
        model: str | None = None,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
    ) -> None:
        """Record what an admitted call used (once), and return what it reserved but did not use.
        job_id None: the call never became a job (refused later); only the reservation is returned."""
        if ticket.settled:
            return
        ticket.settled = True
        if job_id is None and ticket.reserved == 0:
            return
        usage = UsageRecord(job_id, ticket.caller.id, model, prompt_tokens, completion_tokens, self._clock())
        await self._repository.settle(ticket.caller.id, ticket.minute, ticket.caller.limits, ticket.reserved, usage)

    async def prune(self) -> int:
        now = self._clock()
        return await self._repository.prune(now, minute_of(now) - 1)
