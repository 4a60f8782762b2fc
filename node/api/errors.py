"""One middleware turns every failure into a JSON object with a JSON content type.

The client reads the body before the status (client-contract.md §2, style B), so
aiohttp's own 404/405/413 pages and unexpected errors must be JSON too. Domain
errors carry a kind; the HTTP status for each kind is chosen here, and only here. Under /v1
and /serving the same failures take OpenAI's error shape (openai_errors.py), which
the OpenAI SDKs turn into their typed exceptions.
"""

from __future__ import annotations

import logging
import math

from aiohttp import web
from aiohttp.typedefs import Handler

from node.api import wire
from node.api.appkeys import MAX_BODY
from node.api.openai_errors import from_http, from_job_error, in_scope, render
from node.api.openai_wire import OpenAIError
from node.api.render import json_response
from node.jobs.errors import ErrorKind, JobError, Overloaded

log = logging.getLogger(__name__)

STATUS: dict[ErrorKind, int] = {
    ErrorKind.INVALID: 400,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.REJECTED: 405,  # the reference's answer to a guardian refusal; clients expect it
    ErrorKind.OVERLOADED: 429,
    ErrorKind.SERVICE_FAILED: 502,
    ErrorKind.UNAVAILABLE: 503,
}


def error_response(error: JobError) -> web.Response:
    response = json_response(wire.error_body(error), status=STATUS[error.kind])
    if isinstance(error, Overloaded):
        response.headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return response


_HTTP_MESSAGES = {
    404: "Not found",
    405: "Method not allowed",
    413: "Request body too large",
}


def _from_http(error: web.HTTPException, request: web.Request) -> web.Response:
    status = error.status
    params: dict[str, object] = {}
    if status == 404:
        params = {"path": request.path}
    elif status == 405:
        params = {"method": request.method}
        allowed = getattr(error, "allowed_methods", None)
        if allowed:
            params["allowed"] = sorted(allowed)
    elif status == 413:
        params = {"max_bytes": request.app[MAX_BODY]}
    message = _HTTP_MESSAGES.get(status) or error.reason or "HTTP error"
    response = json_response({"error": message, "params": params}, status=status)
    for name in ("Allow", "Retry-After"):
        if name in error.headers:
            response.headers[name] = error.headers[name]
    return response


class UnreadableBody(Exception):
    """The request body could not be read to its end, so the connection cannot carry
    another request: answered 400 and closed."""

    def __init__(self, message: str, client_gone: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.client_gone = client_gone


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    openai = in_scope(request.path)  # /v1 and /serving answer in OpenAI's error shape
    try:
        return await handler(request)
    except OpenAIError as error:  # raised by the /v1 handlers only
        return render(error)
    except JobError as error:
        if openai:
            return render(from_job_error(error))
        return error_response(error)
    except UnreadableBody as error:
        if error.client_gone:
            log.debug("%s %s: %s", request.method, request.path, error.message)
        response = render(OpenAIError(400, error.message)) if openai else json_response({"error": error.message}, 400)
        response.force_close()
        return response
    except web.HTTPException as error:
        if error.status < 400:
            raise
        return render(from_http(error, request)) if openai else _from_http(error, request)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        if openai:
            return render(OpenAIError(500, "The server had an error processing your request.", type="server_error"))
        return json_response({"error": "Internal server error"}, status=500)
