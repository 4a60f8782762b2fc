"""The HTTP side of auth: read a request's credentials, ask the auth domain, render refusals.

One middleware guards both surfaces: `/v1` and `/serving` (auth.v1: none, keys,
signatures, either) and the Infernet `/api` (auth.api: open or keys). It reads the
exact body bytes (aiohttp keeps them for the handler), starts admitting the call,
and leaves the admission on the request; it waits for the verdict before calling the
handler, unless the handler writes its job gated on it (`admission_in_handler`: the
/v1 chat calls), so that the admission and the job's write take one store round. The
usage record of a call is its job's row: the handler names the caller on the job
(`caller_of`) and stores the tokens with its outcome. For the caller's quota, a handler
that knows what the call used says so with
`record_usage(request, job_id, used)`; the
middleware settles the ticket when the handler returns (streams included). A handler
that stores a job's outcome calls `start_settling` before that write, so that both take
one store hop before the answer goes out.

Refusals are answered here, in OpenAI's error shape on /v1 and /serving and in the
Infernet shape on /api, and logged with who and why (a key's name or a claimed
address, never a secret or a signature).
"""

from __future__ import annotations

import ipaddress
import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from node.api.body import read_body
from node.api.client_ip import client_ip
from node.api.render import json_response
from node.auth.errors import AuthRefused, OverQuota, Reason, Unauthenticated
from node.auth.ports import Gate
from node.auth.service import Admitting, AuthService, Credentials, Mode, Ticket
from node.json_codec import loads

log = logging.getLogger(__name__)

AUTH = web.AppKey("auth_service", AuthService)
ADMISSION = web.RequestKey("auth_admission", Admitting)
_USAGE = web.RequestKey("auth_tokens_used", tuple)
_IN_HANDLER = "_auth_admission_in_handler"

V1 = "v1"
API = "api"


@dataclass(frozen=True)
class AuthSettings:
    v1: Mode = Mode.NONE
    api: Mode = Mode.OPEN
    workspace_header: str = "x-deci-workspace"


def surface_of(path: str) -> str | None:
    if path == "/v1" or path.startswith(("/v1/", "/serving/")):
        return V1
    if path.startswith("/api/"):
        return API
    return None


@lru_cache(maxsize=4096)  # asked on every /v1 request; the same few addresses repeat
def is_loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def credentials(request: web.Request, body: bytes, workspace_header: str) -> Credentials:
    headers = request.headers
    ip = client_ip(request)
    return Credentials(
        client_ip=ip,
        loopback=is_loopback(ip),
        authorization=headers.get("Authorization"),
        requester=headers.get("X-Requester-Address"),
        timestamp=headers.get("X-Timestamp"),
        transfer_address=headers.get("X-Transfer-Address"),
        workspace=headers.get(workspace_header),
        body=body,
    )


def max_tokens_of(body: bytes) -> int:
    """The most completion tokens a chat request may use (its reservation); 0 when it does not say."""
    try:
        payload = loads(body)
    except ValueError:
        return 0
    if not isinstance(payload, dict):
        return 0
    for field in ("max_completion_tokens", "max_tokens"):
        value = payload.get(field)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return 0


_OPENAI_TYPES = {401: "authentication_error", 403: "permission_error"}


def openai_refusal(refused: AuthRefused) -> web.Response:
    """401 authentication_error, 403 permission_error, 429 rate_limit_error or insufficient_quota."""
    kind = _OPENAI_TYPES.get(refused.status, "rate_limit_error")
    if refused.reason is Reason.TOKEN_BUDGET:
        kind = "insufficient_quota"
    body = {"error": {"message": refused.message, "type": kind, "param": None, "code": refused.reason.value}}
    response = json_response(body, status=refused.status)
    _quota_headers(refused, response)
    return response


def infernet_refusal(refused: AuthRefused) -> web.Response:
    response = json_response({"error": refused.message, "params": {"reason": refused.reason.value}}, refused.status)
    _quota_headers(refused, response)
    return response


def _quota_headers(refused: AuthRefused, response: web.Response) -> None:
    if isinstance(refused, Unauthenticated):
        response.headers["WWW-Authenticate"] = "Bearer"
    if isinstance(refused, OverQuota):
        if refused.retry_after is not None:
            response.headers["Retry-After"] = str(max(1, math.ceil(refused.retry_after)))
        else:
            # A spent budget does not come back by waiting: the OpenAI SDKs honour this header.
            response.headers["x-should-retry"] = "false"


def caller_of(request: web.Request) -> str | None:
    """Who an admitted call is billed to ("key:<name>", "gonka:<address>", "ip:<address>"); None
    while its admission is undecided or when it was refused."""
    admitting = request.get(ADMISSION)
    ticket = admitting.decided() if admitting is not None else None
    return ticket.caller.id if ticket is not None else None


def record_usage(request: web.Request, job_id: str, used: int) -> None:
    """The tokens the call's job used, for its caller's quota; the middleware settles it when the
    handler returns."""
    request[_USAGE] = (job_id, used)


def _settle(request: web.Request, ticket: Ticket) -> tuple[Awaitable[None], str | None]:
    job_id, used = request.get(_USAGE, (None, 0))
    return request.app[AUTH].settle(ticket, used), job_id


async def _logged(pending: Awaitable[None], job_id: str | None, ticket: Ticket) -> None:
    try:
        await pending
    except Exception:
        log.exception("auth: could not record the usage of job %s (caller %s)", job_id, ticket.caller.id)


async def settle_usage(request: web.Request) -> None:
    """Write the call's usage record (once), if the call was let in and has not settled yet.
    Never raises: a failed write is logged."""
    admitting = request.get(ADMISSION)
    if admitting is None:
        return
    try:
        ticket = await admitting.ticket()  # at once when the handler waited for it already
    except Exception:
        return  # refused, or the admission failed: nothing was let in
    if not ticket.settled:
        await _logged(*_settle(request, ticket), ticket)


def start_settling(request: web.Request) -> Awaitable[None] | None:
    """Submit the call's usage record now, rather than when the handler returns: a handler that
    stores its job's outcome calls this first, then submits that write, so that both go to the
    store in one round (on SQLite one group commit). Await what it returns (it never raises: a
    failed write is logged). None: nothing to write here (not let in yet, or settled already;
    the middleware settles what is left when the handler returns)."""
    admitting = request.get(ADMISSION)
    ticket = admitting.decided() if admitting is not None else None
    if ticket is None or ticket.settled:
        return None
    pending, job_id = _settle(request, ticket)
    return _logged(pending, job_id, ticket)


def admission_in_handler(handler: Handler) -> Handler:
    """Mark a handler that writes its job gated on the call's admission (`admission_gate`) and
    waits for the admission (`admitted`) before it calls anything: the middleware then does not
    wait for the admission before calling it, so that the admission and the job's write take one
    store round. Whatever the handler does, a refusal is the answer (before any error of its own)."""
    setattr(handler, _IN_HANDLER, True)
    return handler


def admission_gate(request: web.Request) -> Gate | None:
    """What the call's job write is gated on (None: the call needs no store hop, or no auth)."""
    admitting = request.get(ADMISSION)
    return admitting.gate if admitting is not None else None


async def admitted(request: web.Request) -> None:
    """Wait for the call's admission; raises its refusal (the middleware answers it)."""
    admitting = request.get(ADMISSION)
    if admitting is not None:
        await admitting.ticket()


def auth_middleware(settings: AuthSettings, on_refused: Callable[[str, str], None] | None = None) -> Any:
    """The service is app[AUTH], set once the store is open (app.py)."""
    modes = {V1: settings.v1, API: settings.api}

    @web.middleware
    async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
        surface = surface_of(request.path)
        mode = modes.get(surface) if surface else None
        if surface is None or mode is None or (mode is Mode.OPEN and surface == API):
            return await handler(request)  # the open /api keeps the client contract's path untouched

        def refuse(refused: AuthRefused) -> web.Response:
            log.info(
                "auth: refused %s %s from %s (%s): %s",
                request.method,
                request.path,
                client_ip(request),
                refused.who or "anonymous",
                refused.reason.value,
            )
            if on_refused is not None:
                on_refused(surface, refused.reason.value)
            return openai_refusal(refused) if surface == V1 else infernet_refusal(refused)

        # Signatures cover the exact bytes sent; aiohttp keeps them for the handler's own read.
        needs_body = mode in (Mode.SIGNATURES, Mode.EITHER) or (mode is Mode.KEYS and surface == V1)
        body = await read_body(request) if needs_body and request.can_read_body else b""
        try:
            if mode is Mode.NONE:  # no credentials to read: the peer's address is the whole check
                ip = client_ip(request)
                admitting = request.app[AUTH].admit_loopback(ip, is_loopback(ip))
            else:
                admitting = request.app[AUTH].begin(
                    credentials(request, body, settings.workspace_header),
                    mode,
                    (lambda: max_tokens_of(body)) if surface == V1 else 0,
                )
            if not getattr(request.match_info.handler, _IN_HANDLER, False):
                await admitting.ticket()
        except AuthRefused as refused:
            return refuse(refused)
        request[ADMISSION] = admitting
        try:
            response = await handler(request)
            await admitting.ticket()  # nothing goes out unless admitted (the handler waited already)
            return response
        except AuthRefused as refused:
            return refuse(refused)
        except Exception:
            try:  # a refusal comes before the handler's own error (bad input, unknown model...)
                await admitting.ticket()
            except AuthRefused as refused:
                return refuse(refused)
            raise
        finally:
            await settle_usage(request)  # unless the handler did already

    return authenticate
