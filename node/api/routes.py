"""The route table: every endpoint once, with what it takes and answers.

It feeds both the router (`setup_routes`) and `/openapi.json` (openapi.py builds
the document from these entries and the wire models they name).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import Field

from node.api import jobs, metrics, node_info, openai_routes, openai_wire, openapi, wire
from node.api.appkeys import CONFIG


@dataclass(frozen=True, slots=True)
class Reply:
    """A documented answer: `body` is a wire type (a model, or a union or list of models)."""

    description: str
    body: Any = None
    media_type: str = "application/json"
    also: tuple[tuple[str, Any], ...] = ()  # more (media type, wire type) pairs the same answer may take


@dataclass(frozen=True, slots=True)
class Query:
    """A query parameter (or, in `Route.path_params`, a path parameter)."""

    name: str
    type: Any = str
    description: str = ""


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    ok: Reply
    body: Any = None  # the request body's wire type; None: no body
    query: tuple[Query, ...] = ()
    # Error answers besides the ones every route or every body can give (openapi.py adds those).
    errors: dict[int, str] = field(default_factory=dict)
    path_params: tuple[Query, ...] = ()
    error_body: Any = wire.ErrorBody  # the shape of this route's JSON errors
    headers: dict[str, str] = field(default_factory=dict)  # response headers (name: description), all answers


# Lenient on purpose (the reference ignores what it does not know, contract trap 1):
# any value is accepted, and only the listed ones mean something.
_RESULT_QUERY = (
    Query("id", list[str], "Job ids; with none, the caller's job ids are listed instead"),
    Query("intermediate", str, "true: include intermediate results; anything else: don't"),
    Query("pending", str, "true: pending jobs only; false: finished only; anything else: all"),
    Query("status", str, "The docs' spelling of the filter: pending | completed; anything else: all"),
)
_GUARDIAN = (
    "A guardian rule refused the job (client-contract.md §6: unknown container, first not external, "
    "no proof, client address not allowed), or a delegated subscription arrived and the chain is not enabled"
)
_STORE = "The store cannot take the job right now"
_OPENAI_ERRORS = {
    400: "invalid_request_error (param names the field)",
    404: "model_not_found (or an unknown URL)",
    405: "Method not allowed",
    413: "Body too large",
    429: "rate_limit_error: too many requests or calls queued; see Retry-After",
    500: "server_error",
    502: "server_error: the model container failed",
    503: "server_error: the model's container is not available",
    504: "server_error: the model did not answer in time",
}
_JOB_ID_HEADER = {"X-Infernet-Job-Id": "The job this call is (GET /api/jobs?id=); on errors once the job exists"}
_CHAT_REPLY = Reply(
    "The completion; with stream=true, SSE events (data: ChatCompletionChunk) ending in data: [DONE]",
    openai_wire.ChatCompletion,
    also=(("text/event-stream", str),),
)
_ModelName = Annotated[str, Field(min_length=1)]
_CHAIN = "The chain is not ready or not reachable (delegated subscriptions)"

ROUTES: tuple[Route, ...] = (
    Route("GET", "/health", node_info.health, "health", "Node health", Reply("Node health", wire.HealthBody)),
    Route("GET", "/info", node_info.info, "info", "Node information", Reply("Node information", wire.InfoBody)),
    Route(
        "GET",
        "/resources",
        node_info.resources,
        "resources",
        "What the running containers report",
        Reply("Each running container's answer, by container id", dict[str, Any]),
        query=(Query("model_id", str, "Ask only about this model"),),
    ),
    Route(
        "POST",
        "/api/jobs",
        jobs.submit,
        "submitJob",
        "Submit a job, or a delegated subscription",
        Reply("The job's id, or {} for a delegated subscription", wire.JobSubmitted),
        body=wire.JobSubmission,
        errors={405: _GUARDIAN, 503: f"{_STORE}; or: {_CHAIN}"},
    ),
    Route(
        "GET",
        "/api/jobs",
        jobs.get_jobs,
        "getJobs",
        "Job results, or the caller's job ids",
        Reply(
            "With id: the caller's job results, in request order, unknown ids left out. "
            "Without: the caller's job ids, pending first.",
            wire.JobResults,
        ),
        query=_RESULT_QUERY,
        errors={400: "A query the node cannot read"},
    ),
    Route(
        "POST",
        "/api/jobs/batch",
        jobs.submit_batch,
        "submitBatch",
        "Submit several jobs at once",
        Reply("One answer per item, in order: an id, {} or the item's error", list[wire.BatchItemAnswer]),
        body=wire.BatchSubmission,
        errors={503: _STORE},
    ),
    Route(
        "POST",
        "/api/jobs/stream",
        jobs.stream,
        "streamJob",
        "Run a job and stream its first container's output",
        Reply("The job id and a newline, then the container's raw output", str, "text/plain"),
        body=wire.JobSubmission,
        errors={
            405: f"{_GUARDIAN}; a delegated subscription cannot be streamed",
            502: "The container failed before the stream started",
            503: _STORE,
        },
    ),
    Route(
        "PUT",
        "/api/status",
        jobs.record_status,
        "recordStatus",
        "Record the status of a job the caller runs",
        Reply("Recorded", wire.Empty),
        body=wire.StatusBody,
        errors={403: "The caller is not in server.status_allowed_networks", 503: _STORE},
    ),
    Route(
        "GET",
        "/openapi.json",
        openapi.serve,
        "openapi",
        "This document",
        Reply("The OpenAPI document of this API", dict[str, Any]),
    ),
    Route(
        "GET",
        "/metrics",
        metrics.metrics_endpoint,
        "metrics",
        "Prometheus metrics",
        Reply("Prometheus text exposition format", str, "text/plain"),
    ),
    # OpenAI-compatible inference (openai_routes.py); errors there take OpenAI's shape.
    Route(
        "POST",
        "/v1/chat/completions",
        openai_routes.chat_completions,
        "createChatCompletion",
        "OpenAI chat completions; each call is a job",
        _CHAT_REPLY,
        body=openai_wire.ChatCompletionRequest,
        errors=_OPENAI_ERRORS,
        error_body=openai_wire.OpenAIErrorBody,
        headers=_JOB_ID_HEADER,
    ),
    Route(
        "GET",
        "/v1/models",
        openai_routes.list_models,
        "listModels",
        "The models this node serves",
        Reply("Every configured model, and whether its container is available", openai_wire.ModelList),
        errors={status: _OPENAI_ERRORS[status] for status in (429, 500)},
        error_body=openai_wire.OpenAIErrorBody,
    ),
    Route(
        "POST",
        "/serving/llm/{model}/chat/completions",
        openai_routes.serving_chat_completions,
        "createChatCompletionForModel",
        "The same, per model (base_url http://host/serving/llm/<model>); the path's model wins",
        _CHAT_REPLY,
        body=openai_wire.ChatCompletionRequest,
        errors=_OPENAI_ERRORS,
        path_params=(Query("model", _ModelName, "The model to call"),),
        error_body=openai_wire.OpenAIErrorBody,
        headers=_JOB_ID_HEADER,
    ),
)


def setup_routes(app: web.Application) -> None:
    for route in ROUTES:
        # aiohttp's spelling of a path parameter that may hold slashes (a model like org/name)
        path = route.path.replace("{model}", "{model:.+}")
        if route.method == "GET":
            app.router.add_get(path, route.handler)  # and HEAD, as aiohttp does
        else:
            app.router.add_route(route.method, path, route.handler)
    config = app.get(CONFIG)
    max_chain_length = config.jobs.max_chain_length if config is not None else None
    app[openapi.DOCUMENT] = openapi.encode(openapi.build_document(ROUTES, max_chain_length))
