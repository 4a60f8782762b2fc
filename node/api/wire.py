"""The wire format, in one place: request and response models.

The handlers parse with these models, `/openapi.json` is generated from them,
and the tests import them. Field shapes follow client-contract.md.
"""

from __future__ import annotations

import json
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


class HealthBody(BaseModel):
    status: Literal["healthy", "unhealthy"]


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


def decode_json(raw: bytes) -> Any:
    """Decode a request body with the stdlib (integers up to 2^256 stay exact)."""
    if not raw.strip():
        raise InvalidRequest("Request body is empty; expected JSON")
    if _too_deep(raw):
        raise InvalidRequest(f"Malformed JSON body: nested too deeply (more than {MAX_JSON_DEPTH} levels)")
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise InvalidRequest("Request body is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise InvalidRequest(
            f"Malformed JSON body: {error.msg} at line {error.lineno} column {error.colno}"
        ) from None
    except RecursionError:
        raise InvalidRequest("Malformed JSON body: nested too deeply") from None


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


def parse_batch(body: Any) -> list[JobRequest | DelegatedRequest]:
    if not isinstance(body, list):
        raise InvalidRequest("Expected a list")
    items = []
    for index, item in enumerate(body):
        try:
            items.append(parse_job(item))
        except InvalidRequest as error:
            raise InvalidRequest(f"Item {index}: {error.message}", {"index": index, **(error.params or {})}) from None
    return items


def parse_status(body: Any) -> StatusBody:
    if not isinstance(body, dict):
        raise InvalidRequest("Invalid status: expected a JSON object")
    try:
        return StatusBody.model_validate(body)
    except ValidationError as error:
        raise _invalid("status", error) from None
