"""The wire format, in one place: request and response models, parsing, rendering.

The handlers parse requests with these models and render answers with the
plain functions at the end (no model validation on the hot path; the tests
check that what they render validates against the response models).
`/openapi.json` is generated from the route table (routes.py) and these models.
Field shapes follow client-contract.md.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from node import json_codec
from node.jobs.desk import BatchAnswer, DelegatedRequest, JobRequest
from node.jobs.errors import InvalidRequest, JobError
from node.jobs.model import ContainerResult, Job, JobStatus

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

    # minItems only in the document: the guardian answers an empty list with the
    # reference's 405 "No containers specified", which clients match on.
    containers: list[StrictStr] = Field(
        description="Container ids, run in order as a chain", json_schema_extra={"minItems": 1}
    )
    data: Any = Field(description="Input of the first container: any JSON value")
    requires_proof: StrictBool | None = Field(default=None, description="Missing or null means false")


class BatchJobRequestBody(JobRequestBody):
    """An item of POST /api/jobs/batch: as JobRequestBody, but a refusal (even of an
    empty container list) is answered in the item's place, and the batch still succeeds."""

    containers: list[StrictStr] = Field(description="Container ids, run in order as a chain")


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
    """A delegated subscription: signed off-chain, created and delivered on-chain.

    The server's rule: a body with `containers` is a job request, else one with
    `subscription` is a delegated subscription."""

    model_config = ConfigDict(extra="ignore", json_schema_extra={"not": {"required": ["containers"]}})

    subscription: SubscriptionBody
    signature: SignatureBody
    data: Any = None


class StatusBody(_Body):
    """PUT /api/status: record the status of a job the caller runs itself."""

    id: Annotated[StrictStr, Field(min_length=1, max_length=256)]
    # Any string parses: the handler checks the value itself (its message is part of
    # the contract); the document says which values pass.
    status: StrictStr = Field(
        description="success | failed | running", json_schema_extra={"enum": ["success", "failed", "running"]}
    )
    containers: list[StrictStr]
    data: Any = None
    requires_proof: StrictBool | None = None


# -- responses (documented in /openapi.json) ---------------------------------


class ErrorBody(BaseModel):
    error: str
    params: dict[str, Any] | None = None


class JobId(BaseModel):
    id: str


class Empty(BaseModel):
    """{}: accepted (a delegated subscription, a recorded status)."""

    model_config = ConfigDict(extra="forbid")


class ContainerResultBody(BaseModel):
    container: str
    output: Any = None
    error: str | None = None


class TokenUsageBody(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class JobResultBody(BaseModel):
    id: str
    status: Literal["running", "success", "failed"]
    result: ContainerResultBody | None
    model: str | None = Field(default=None, description="Model calls (/v1) only: the model asked for")
    usage: TokenUsageBody | None = Field(default=None, description="Model calls only: tokens in and out, once finished")
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


class UnavailableContainer(BaseModel):
    id: str
    image: str
    state: str | None = Field(default=None, description="The Docker manager's state for it")
    reason: str | None = None


class Implementation(BaseModel):
    implementation: str
    version: str


class InfoBody(BaseModel):
    version: str = Field(description="The REST contract's version")
    containers: list[ContainerInfo] = Field(description="Running containers")
    unavailable_containers: list[UnavailableContainer] = Field(description="Configured, not running, and why")
    pending: PendingBody
    chain: ChainInfo
    node: Implementation


# Bodies that are unions or lists of the models above. anyOf, not oneOf: [] is both
# an empty result list and an empty id list, and a job body may carry `subscription`.
JobSubmission = JobRequestBody | DelegatedSubscriptionBody
BatchSubmission = list[BatchJobRequestBody | DelegatedSubscriptionBody]
JobSubmitted = JobId | Empty
BatchItemAnswer = JobId | ErrorBody | Empty
JobResults = list[JobResultBody] | list[str]


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
    # orjson takes only UTF-8 standard JSON without lone surrogates or out-of-range numbers: what
    # it takes needs none of the checks below; what it refuses is decoded (and named) by the stdlib.
    done, value = json_codec.fast_loads(raw)
    if done:
        return value
    try:
        # As json.loads does: UTF-8, -16 or -32, and surrogates let through to be named below.
        text = raw.decode(json.detect_encoding(raw), "surrogatepass")
        decoder = _FINITE_DECODER if _BIG_FLOAT_HINT.search(raw) else _DECODER
        value = decoder.decode(text)
    except UnicodeDecodeError:
        raise InvalidRequest("Request body is not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise InvalidRequest(f"Malformed JSON body: {error.msg} at line {error.lineno} column {error.colno}") from None
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
        raise InvalidRequest(f"Invalid job request: expected a JSON object, got {type(body).__name__}")
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


# -- rendering (plain functions: this is the hot path) ------------------------

# The wire keeps the reference's three values: a queued job reads as "running"
# so that clients polling for it keep polling.
_STATUS = {
    JobStatus.QUEUED: "running",
    JobStatus.RUNNING: "running",
    JobStatus.SUCCESS: "success",
    JobStatus.FAILED: "failed",
}


def container_result(result: ContainerResult) -> dict[str, Any]:
    if result.error is not None:
        return {"container": result.container, "error": result.error}
    return {"container": result.container, "output": result.output}


def job_result(job: Job, with_intermediate: bool = False) -> dict[str, Any]:
    """A JobResultBody."""
    body: dict[str, Any] = {
        "id": job.id,
        "status": _STATUS[job.status],
        "result": container_result(job.result) if job.result is not None else None,
    }
    if job.model is not None:  # model calls only: other jobs keep the reference's shape
        usage = job.usage
        body["model"] = job.model
        body["usage"] = (
            None
            if usage is None
            else {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.prompt_tokens + usage.completion_tokens,
            }
        )
    if with_intermediate:
        steps = [container_result(step) for step in job.intermediate]
        # The reference sends `intermediate_results`; the client's types say
        # `intermediate`. Both, so either reader finds them.
        body["intermediate_results"] = steps
        body["intermediate"] = steps
    return body


def error_body(error: JobError) -> dict[str, Any]:
    """An ErrorBody: the message, and `params` when the error has them."""
    body: dict[str, Any] = {"error": error.message}
    if error.params is not None:
        body["params"] = error.params
    return body


def batch_answer(answer: BatchAnswer) -> dict[str, Any]:
    """A BatchItemAnswer: {"id"} for a new job, {} for a delegated subscription, else the error."""
    if isinstance(answer, str):
        return {"id": answer}
    if answer is None:
        return {}
    return error_body(answer)
