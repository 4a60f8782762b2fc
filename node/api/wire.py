"""The wire format, in one place: request and response models.

The handlers parse with these models, `/openapi.json` is generated from them,
and the tests import them. Field shapes follow client-contract.md.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from node.jobs.desk import DelegatedRequest, JobRequest
from node.jobs.errors import InvalidRequest

UINT16 = 2**16 - 1
UINT32 = 2**32 - 1
UINT256 = 2**256 - 1
Address = Annotated[StrictStr, Field(pattern=r"^0x[0-9a-fA-F]{40}$")]
Bytes32 = Annotated[StrictStr, Field(pattern=r"^(0x)?[0-9a-fA-F]{64}$")]


class _Body(BaseModel):
    # Unknown keys are ignored: clients of later versions may send more.
    model_config = ConfigDict(extra="ignore")


class JobRequestBody(_Body):
    """POST /api/jobs, /api/jobs/stream, and items of /api/jobs/batch."""

    containers: list[StrictStr] = Field(description="Container ids, run in order as a chain")
    data: Any = Field(description="Input of the first container: any JSON value")
    requires_proof: StrictBool | None = Field(default=None, description="Missing or null means false")


class SubscriptionBody(_Body):
    owner: Address
    active_at: Annotated[StrictInt, Field(ge=0, le=UINT32)]
    period: Annotated[StrictInt, Field(ge=0, le=UINT32)]
    frequency: Annotated[StrictInt, Field(ge=0, le=UINT32)]
    redundancy: Annotated[StrictInt, Field(ge=0, le=UINT16)]
    containers: Bytes32 = Field(description="keccak256(abi.encode(string)) of the comma-joined container ids")
    lazy: StrictBool
    verifier: Address
    payment_amount: Annotated[StrictInt, Field(ge=0, le=UINT256)]
    payment_token: Address
    wallet: Address


class SignatureBody(_Body):
    nonce: Annotated[StrictInt, Field(ge=0, le=UINT32)]
    expiry: Annotated[StrictInt, Field(ge=0, le=UINT32)]
    v: Annotated[StrictInt, Field(ge=0, le=255)]
    r: Annotated[StrictInt, Field(ge=0, le=UINT256)]
    s: Annotated[StrictInt, Field(ge=0, le=UINT256)]


class DelegatedSubscriptionBody(_Body):
    """A delegated subscription: signed off-chain, created and delivered on-chain."""

    subscription: SubscriptionBody
    signature: SignatureBody
    data: Any = None


class StatusBody(_Body):
    """PUT /api/status: record the status of a job the caller runs itself."""

    id: Annotated[StrictStr, Field(min_length=1, max_length=256)]
    status: StrictStr = Field(description="success | failed | running")
    containers: list[StrictStr]
    data: Any = None
    requires_proof: StrictBool | None = None


# -- responses (documented in /openapi.json) ---------------------------------


class ErrorBody(BaseModel):
    error: str
    params: dict[str, Any] | None = None


class JobId(BaseModel):
    id: str


class ContainerResultBody(BaseModel):
    container: str
    output: Any = None
    error: str | None = None


class JobResultBody(BaseModel):
    id: str
    status: Literal["running", "success", "failed"]
    result: ContainerResultBody | None
    intermediate_results: list[ContainerResultBody] | None = Field(
        default=None, description="Only with intermediate=true"
    )
    intermediate: list[ContainerResultBody] | None = Field(
        default=None, description="Same as intermediate_results (the client's name)"
    )


class StoreHealthBody(BaseModel):
    status: Literal["degraded"]
    cause: str = Field(description="Why the store cannot write, e.g. database or disk is full")
    since: float = Field(description="Unix time of the first failed write")


class HealthBody(BaseModel):
    status: Literal["healthy", "unhealthy"]
    store: StoreHealthBody | None = Field(default=None, description="Only while the store cannot write")


class ContainerInfo(BaseModel):
    id: str
    description: str
    external: bool
    image: str


class PendingBody(BaseModel):
    offchain: int
    onchain: int


class ChainInfo(BaseModel):
    enabled: bool
    address: str


class InfoBody(BaseModel):
    version: str
    containers: list[ContainerInfo]
    pending: PendingBody
    chain: ChainInfo


# -- parsing -----------------------------------------------------------------


MAX_JSON_DEPTH = 256


def _too_deep(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """True if arrays/objects nest deeper than `limit` (strings respected).

    The stdlib decoder recurses per level and can overflow the C stack (a
    crash, not an exception) long before its recursion limit on a thread with
    a small stack; so deep bodies are refused before decoding.
    """
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # cheap common case: cannot be that deep
    depth = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


# Only bodies that may hold a surrogate (raw, or as a \\u escape) are walked string by string.
_SURROGATE_HINT = re.compile("[\ud800-\udfff]|\\\\u[dD][89a-fA-F]")
# Only bodies that may hold a float too large for a double (1e999, or 300+ digits) have
# their floats checked one by one; the rest keep the decoder's C fast path.
_BIG_FLOAT_HINT = re.compile(rb"\d[eE]|\d{300}")


class _NotStandardJson(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NotStandardJson(f"{name} is not standard JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _NotStandardJson(f"the number {text[:20]}{'...' if len(text) > 20 else ''} is too large for a double")
    return value


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
_FINITE_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def decode_json(raw: bytes, *, check_text: bool = True) -> Any:
    """Decode a request body with the stdlib (integers up to 2^256 stay exact).

    Only standard JSON is accepted: NaN, Infinity and numbers beyond a double are
    refused, as are strings holding a lone UTF-16 surrogate (they cannot be stored or
    sent on as UTF-8); `check_text=False` leaves that last check to the caller
    (a batch answers it per item).
    """
    if not raw.strip():
        raise InvalidRequest("Request body is empty; expected JSON")
    if _too_deep(raw):
        raise InvalidRequest(f"Malformed JSON body: nested too deeply (more than {MAX_JSON_DEPTH} levels)")
    try:
        # As json.loads does: UTF-8, -16 or -32, and surrogates let through to be named below.
        text = raw.decode(json.detect_encoding(raw), "surrogatepass")
        decoder = _FINITE_DECODER if _BIG_FLOAT_HINT.search(raw) else _DECODER
        value = decoder.decode(text)
    except UnicodeDecodeError:
        raise InvalidRequest("Request body is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise InvalidRequest(
            f"Malformed JSON body: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None
    except _NotStandardJson as error:
        raise InvalidRequest(f"Malformed JSON body: {error}") from None
    except ValueError:
        # The only other ValueError: int() refusing a very long integer literal.
        raise InvalidRequest(
            f"Malformed JSON body: an integer has more than {sys.get_int_max_str_digits()} digits"
        ) from None
    except RecursionError:
        raise InvalidRequest("Malformed JSON body: nested too deeply") from None
    if check_text and _SURROGATE_HINT.search(text):
        refusal = lone_surrogate_error(value)
        if refusal is not None:
            raise refusal
    return value


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _surrogate_path(value: Any, path: tuple[str, ...]) -> tuple[str, ...] | None:
    if isinstance(value, str):
        return None if _is_text(value) else path
    if isinstance(value, dict):
        for key, item in value.items():
            if not _is_text(key):
                return (*path, key)
            found = _surrogate_path(item, (*path, key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _surrogate_path(item, (*path, str(index)))
            if found is not None:
                return found
    return None


def lone_surrogate_error(value: Any) -> InvalidRequest | None:
    """The error naming the first string (or key) of `value` that holds a lone UTF-16
    surrogate such as "\\ud800", or None when all of it is Unicode text."""
    path = _surrogate_path(value, ())
    if path is None:
        return None
    # The path itself may hold the surrogate (a key): escape it for the message.
    field = ".".join(path).encode("utf-8", "backslashreplace").decode("utf-8") or "(body)"
    return InvalidRequest(
        f"Invalid JSON text: the string at '{field}' holds a lone UTF-16 surrogate, which is not Unicode text",
        {"field": field},
    )


def _invalid(what: str, error: ValidationError) -> InvalidRequest:
    first = error.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "(body)"
    message = first["msg"]
    if first["type"] == "missing":
        message = "missing"
    return InvalidRequest(f"Invalid {what}: field '{field}': {message}", {"field": field})


def parse_job(body: Any) -> JobRequest | DelegatedRequest:
    """A JobRequest, or a delegated subscription when the body has `subscription`."""
    if not isinstance(body, dict):
        raise InvalidRequest(
            f"Invalid job request: expected a JSON object, got {type(body).__name__}"
        )
    if "subscription" in body and "containers" not in body:
        try:
            parsed = DelegatedSubscriptionBody.model_validate(body)
        except ValidationError as error:
            raise _invalid("delegated subscription", error) from None
        return DelegatedRequest(
            subscription=parsed.subscription.model_dump(),
            signature=parsed.signature.model_dump(),
            data=parsed.data,
        )
    try:
        job = JobRequestBody.model_validate(body)
    except ValidationError as error:
        raise _invalid("job request", error) from None
    return JobRequest(job.containers, job.data, bool(job.requires_proof))


def parse_batch(body: Any) -> list[JobRequest | DelegatedRequest | InvalidRequest]:
    """The items of a batch, in order. A malformed item fails the whole batch; an item
    whose text cannot be stored (a lone surrogate) is answered on its own, in its place."""
    if not isinstance(body, list):
        raise InvalidRequest("Expected a list")
    items: list[JobRequest | DelegatedRequest | InvalidRequest] = []
    for index, item in enumerate(body):
        try:
            parsed = parse_job(item)
        except InvalidRequest as error:
            raise InvalidRequest(f"Item {index}: {error.message}", {"index": index, **(error.params or {})}) from None
        items.append(lone_surrogate_error(item) or parsed)
    return items


def parse_status(body: Any) -> StatusBody:
    if not isinstance(body, dict):
        raise InvalidRequest("Invalid status: expected a JSON object")
    try:
        return StatusBody.model_validate(body)
    except ValidationError as error:
        raise _invalid("status", error) from None
