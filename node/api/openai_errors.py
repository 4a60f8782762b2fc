"""Failures on /v1 and /serving in OpenAI's error shape (the SDKs' typed exceptions key on it).

`errors.json_errors` renders them with these for those paths; the rest of the node
keeps the Infernet shape `{"error", "params"?}`.
"""

from __future__ import annotations

import math

from aiohttp import web

from node.api.openai_wire import OpenAIError, container_param
from node.jobs.errors import ContainerFailed, InvalidRequest, JobError, Overloaded, Rejected
from node.jobs.model import Failure

JOB_HEADER = "X-Infernet-Job-Id"


def in_scope(path: str) -> bool:
    return path == "/v1" or path.startswith(("/v1/", "/serving/"))


def from_job_error(error: JobError, headers: dict[str, str] | None = None) -> OpenAIError:
    if isinstance(error, ContainerFailed):
        return from_failure(error.message, error.failure, headers)
    if isinstance(error, Overloaded):
        queue = bool(error.params and "limit" in error.params)
        return OpenAIError(
            429,
            error.message,
            type="rate_limit_error",
            code="queue_full" if queue else "rate_limit_exceeded",
            headers={**(headers or {}), "Retry-After": str(max(1, math.ceil(error.retry_after)))},
        )
    if isinstance(error, Rejected):
        return OpenAIError(403, error.message, type="permission_error", headers=headers)
    if isinstance(error, InvalidRequest):
        field = (error.params or {}).get("field")
        return OpenAIError(400, error.message, param=field if isinstance(field, str) else None, headers=headers)
    from node.api.errors import STATUS  # errors.py imports this module: the one kind-to-status table

    status = STATUS[error.kind]
    kind = "invalid_request_error" if status < 500 else "server_error"
    return OpenAIError(status, error.message, type=kind, headers=headers)


def from_failure(message: str | None, failure: Failure | None, headers: dict[str, str] | None = None) -> OpenAIError:
    """A failed container call: unavailable 503, timeout 504, refused input 400, else 502."""
    text = message or "the model call failed"
    if failure is Failure.UNAVAILABLE:
        return OpenAIError(
            503, f"The model is not available: {text}", type="server_error", code="model_unavailable", headers=headers
        )
    if failure is Failure.TIMEOUT:
        return OpenAIError(
            504, f"The model did not answer in time: {text}", type="server_error", code="timeout", headers=headers
        )
    if failure is Failure.REFUSED:
        return OpenAIError(400, f"The model refused the request: {text}", param=container_param(text), headers=headers)
    return OpenAIError(502, f"The model failed: {text}", type="server_error", headers=headers)


_HTTP = {
    404: ("Unknown request URL: {method} {path}. Please check the URL for typos.", "unknown_url"),
    405: ("Method {method} is not allowed for {path}.", "method_not_allowed"),
    413: ("The request body is too large.", "request_too_large"),
}


def from_http(error: web.HTTPException, request: web.Request) -> OpenAIError:
    template, code = _HTTP.get(error.status, (error.reason or "HTTP error", None))
    message = template.format(method=request.method, path=request.path)
    openai = OpenAIError(error.status, message, code=code)
    for name in ("Allow", "Retry-After"):
        if name in error.headers:
            openai.headers[name] = error.headers[name]
    return openai


def render(error: OpenAIError) -> web.Response:
    response = web.Response(body=error.body(), status=error.status, content_type="application/json")
    response.headers.update(error.headers)
    return response
