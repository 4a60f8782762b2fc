"""The OpenAPI 3 document of the REST API, generated from the wire models."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import BaseModel

from node import API_VERSION
from node.api import openai_wire, wire
from node.api.render import json_response

_MODELS: list[type[BaseModel]] = [
    wire.JobRequestBody,
    wire.DelegatedSubscriptionBody,
    wire.SubscriptionBody,
    wire.SignatureBody,
    wire.StatusBody,
    wire.ErrorBody,
    wire.JobId,
    wire.ContainerResultBody,
    wire.JobResultBody,
    wire.HealthBody,
    wire.InfoBody,
    openai_wire.ChatCompletionRequest,
    openai_wire.ChatCompletion,
    openai_wire.ChatCompletionChunk,
    openai_wire.ModelList,
    openai_wire.OpenAIErrorBody,
]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "Invalid request (the error names the field)",
        403: "Caller not allowed",
        404: "Not found",
        405: "Rejected by the guardian, or method not allowed",
        413: "Body too large",
        429: "Too many requests or jobs queued; see Retry-After",
        500: "Internal error",
        502: "The container failed before the stream started",
        503: "The job store cannot write right now (disk full, I/O error); the error names the cause",
    }
    return {str(status): _json(_ref("ErrorBody"), text[status]) for status in statuses}


_OPENAI_ERRORS = {
    400: "invalid_request_error: the request is invalid (param names the field)",
    403: "permission_error: this client may not use the model's container",
    404: "model_not_found (or an unknown URL)",
    405: "Method not allowed",
    413: "Body too large",
    429: "rate_limit_error: too many requests or calls queued; see Retry-After",
    500: "server_error",
    502: "server_error: the model container failed",
    503: "server_error: the model's container is not available",
    504: "server_error: the model did not answer in time",
}
_JOB_ID_HEADER = {
    "X-Infernet-Job-Id": {
        "description": "The job this call is (GET /api/jobs?id=); on errors once the job exists",
        "schema": {"type": "string"},
    }
}


def _openai_errors() -> dict[str, Any]:
    return {
        str(status): {**_json(_ref("OpenAIErrorBody"), text), "headers": _JOB_ID_HEADER}
        for status, text in _OPENAI_ERRORS.items()
    }


def _chat_operation(operation_id: str, summary: str, parameters: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "post": {
            "operationId": operation_id,
            "summary": summary,
            "parameters": parameters,
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("ChatCompletionRequest")}}},
            "responses": {
                "200": {
                    "description": "The completion; with stream=true, SSE events (data: ChatCompletionChunk) ending in data: [DONE]",
                    "headers": _JOB_ID_HEADER,
                    "content": {
                        "application/json": {"schema": _ref("ChatCompletion")},
                        "text/event-stream": {"schema": {"type": "string"}},
                    },
                },
                **_openai_errors(),
            },
        }
    }


def _openai_paths() -> dict[str, Any]:
    model = {"name": "model", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
    return {
        "/v1/chat/completions": _chat_operation(
            "createChatCompletion", "OpenAI chat completions; each call is a job", []
        ),
        "/serving/llm/{model}/chat/completions": _chat_operation(
            "createChatCompletionForModel",
            "The same, per model (base_url http://host/serving/llm/<model>); the path's model wins",
            [model],
        ),
        "/v1/models": {
            "get": {
                "operationId": "listModels",
                "responses": {
                    "200": _json(_ref("ModelList"), "Every configured model, and whether its container is available"),
                    **{status: body for status, body in _openai_errors().items() if status in ("429", "500")},
                },
            }
        },
    }


def _components() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model in _MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in schema.pop("$defs", {}).items():
            schemas[name] = definition
        schemas[model.__name__] = schema
    return schemas


def build_document() -> dict[str, Any]:
    components = _components()
    # The handler checks the status itself (its message is part of the contract), so the
    # model takes any string; the document says which values pass.
    components["StatusBody"]["properties"]["status"]["enum"] = ["success", "failed", "running"]
    # The server's rule: a body with `containers` is a job request, else one with
    # `subscription` is a delegated subscription. anyOf, not oneOf: [] is both an
    # empty result list and an empty id list, and a job body may carry `subscription`.
    delegated = {"allOf": [_ref("DelegatedSubscriptionBody"), {"not": {"required": ["containers"]}}]}
    job_or_delegated = {"anyOf": [_ref("JobRequestBody"), delegated]}
    common = _errors(404, 405, 413, 429, 500, 503)
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Infernet node REST API",
            "version": API_VERSION,
            "description": "Off-chain jobs, delegated subscriptions and job results (infernet-client 1.4.0 contract), "
            "and OpenAI-compatible chat completions (/v1).",
        },
        "paths": {
            "/health": {"get": {"operationId": "health", "responses": {"200": _json(_ref("HealthBody"), "Node health"), **_errors(429)}}},
            "/info": {"get": {"operationId": "info", "responses": {"200": _json(_ref("InfoBody"), "Node information"), **_errors(429)}}},
            "/resources": {
                "get": {
                    "operationId": "resources",
                    "parameters": [{"name": "model_id", "in": "query", "required": False, "schema": {"type": "string"}}],
                    "responses": {
                        "200": _json({"type": "object", "additionalProperties": {}}, "Each running container's answer, by container id"),
                        **_errors(429),
                    },
                }
            },
            "/api/jobs": {
                "post": {
                    "operationId": "submitJob",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": job_or_delegated}}},
                    "responses": {
                        "200": _json({"oneOf": [_ref("JobId"), {"type": "object", "maxProperties": 0}]}, "Job id, or {} for a delegated subscription"),
                        **_errors(400),
                        **common,
                    },
                },
                "get": {
                    "operationId": "getJobs",
                    "parameters": [
                        {"name": "id", "in": "query", "required": False, "style": "form", "explode": True,
                         "schema": {"type": "array", "items": {"type": "string"}}},
                        # Lenient on purpose (the reference ignores what it doesn't know, contract
                        # trap 1): any value is accepted, and only the listed ones mean something.
                        {"name": "intermediate", "in": "query", "required": False, "schema": {"type": "string"},
                         "description": "true: include intermediate results; anything else: don't"},
                        {"name": "pending", "in": "query", "required": False, "schema": {"type": "string"},
                         "description": "true: pending jobs only; false: finished only; anything else: all"},
                        {"name": "status", "in": "query", "required": False, "schema": {"type": "string"},
                         "description": "The docs' spelling of the filter: pending | completed; anything else: all"},
                    ],
                    "responses": {
                        "200": _json(
                            {"anyOf": [
                                {"type": "array", "items": _ref("JobResultBody")},
                                {"type": "array", "items": {"type": "string"}},
                            ]},
                            "With id: the caller's job results, in request order, unknown ids left out. Without: the caller's job ids, pending first.",
                        ),
                        **_errors(400, 429),
                    },
                },
            },
            "/api/jobs/batch": {
                "post": {
                    "operationId": "submitBatch",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "array", "items": job_or_delegated}}}},
                    "responses": {
                        "200": _json(
                            {"type": "array", "items": {"oneOf": [_ref("JobId"), _ref("ErrorBody"), {"type": "object", "maxProperties": 0}]}},
                            "One answer per item, in order",
                        ),
                        **_errors(400),
                        **common,
                    },
                }
            },
            "/api/jobs/stream": {
                "post": {
                    "operationId": "streamJob",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("JobRequestBody")}}},
                    "responses": {
                        "200": {"description": "The job id and a newline, then the container's raw output",
                                "content": {"text/plain": {"schema": {"type": "string"}}}},
                        **_errors(400, 502),
                        **common,
                    },
                }
            },
            "/api/status": {
                "put": {
                    "operationId": "recordStatus",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("StatusBody")}}},
                    "responses": {
                        "200": _json({"type": "object"}, "Recorded"),
                        **_errors(400, 403),
                        **common,
                    },
                }
            },
            **_openai_paths(),
        },
        "components": {"schemas": components},
    }


_DOCUMENT = build_document()


async def openapi(request: web.Request) -> web.Response:
    return json_response(_DOCUMENT)
