"""The OpenAPI document, generated from the route table (routes.py) and the wire models."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel, TypeAdapter

from node import API_VERSION
from node.api.wire import ErrorBody

if TYPE_CHECKING:
    from node.api.routes import Route

DOCUMENT = web.AppKey("openapi_document", bytes)  # encoded once, at start

_REF = "#/components/schemas/{model}"

# Answers any route can give, and any route with a body. The server answers 414 and 431
# before any route is chosen, so always in the Infernet error shape.
_BEFORE_ROUTING = {
    414: "URL too long (server.max_url_bytes)",
    431: "Request header too long, or too many headers",
}
_EVERY_ROUTE = {
    429: "Too many requests, or too many jobs queued; see Retry-After",
    500: "Internal error",
}
_WITH_BODY = {
    400: "Invalid request (the error names the field)",
    413: "Body too large (server.max_body_bytes)",
}


class _Schemas:
    """JSON schemas of wire types; the models they name are collected as components."""

    def __init__(self) -> None:
        self.components: dict[str, Any] = {}

    def of(self, wire_type: Any) -> dict[str, Any]:
        schema = TypeAdapter(wire_type).json_schema(ref_template=_REF)
        self.components.update(schema.pop("$defs", {}))
        if isinstance(wire_type, type) and issubclass(wire_type, BaseModel):
            # A model at the top: a reference to its component, as where it is nested.
            self.components[wire_type.__name__] = schema
            return {"$ref": _REF.format(model=wire_type.__name__)}
        return schema


def _openapi30(node: Any) -> Any:
    """pydantic writes JSON Schema 2020-12; OpenAPI 3.0 spells `null` and `const` its own way.

    3.0, not 3.1: in 3.1 (JSON Schema 2020-12) 1.0 is an integer, and the node refuses
    1.0 where it wants an integer; 3.0 keeps the two apart, as the node does."""
    if isinstance(node, list):
        return [_openapi30(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _openapi30(value) for key, value in node.items()}
    if "const" in node:
        node["enum"] = [node.pop("const")]
    branches = node.get("anyOf")
    if isinstance(branches, list) and {"type": "null"} in branches:
        rest = [branch for branch in branches if branch != {"type": "null"}]
        del node["anyOf"]
        if len(rest) == 1 and "type" in rest[0]:
            node.update(rest[0])  # {"type": "string", "nullable": true}
        else:
            node["anyOf"] = rest
        node["nullable"] = True
    return node


def _headers(route: Route) -> dict[str, Any]:
    return {name: {"description": text, "schema": {"type": "string"}} for name, text in route.headers.items()}


def _reply(schemas: _Schemas, route: Route) -> dict[str, Any]:
    reply = route.ok
    answer: dict[str, Any] = {"description": reply.description}
    if route.headers:
        answer["headers"] = _headers(route)
    if reply.body is not None:
        bodies = ((reply.media_type, reply.body), *reply.also)
        answer["content"] = {media_type: {"schema": schemas.of(body)} for media_type, body in bodies}
    return answer


def _error(schemas: _Schemas, route: Route, status: int, description: str) -> dict[str, Any]:
    body = ErrorBody if status in _BEFORE_ROUTING else route.error_body
    answer: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schemas.of(body)}}}
    headers = _headers(route) if status not in _BEFORE_ROUTING else {}
    if status == 429:
        headers["Retry-After"] = {"description": "Seconds until a retry may succeed", "schema": {"type": "integer"}}
    if headers:
        answer["headers"] = headers
    return answer


def _operation(schemas: _Schemas, route: Route) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": route.operation_id, "summary": route.summary}
    parameters: list[dict[str, Any]] = [
        {"name": param.name, "in": "path", "required": True, "schema": schemas.of(param.type)}
        for param in route.path_params
    ]
    for query in route.query:
        schema = schemas.of(query.type)
        parameter = {"name": query.name, "in": "query", "required": False, "schema": schema}
        if query.description:
            parameter["description"] = query.description
        if schema.get("type") == "array":
            parameter.update(style="form", explode=True)  # ?id=a&id=b
        parameters.append(parameter)
    if parameters:
        operation["parameters"] = parameters
    errors = {**_BEFORE_ROUTING, **_EVERY_ROUTE}
    if route.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schemas.of(route.body)}},
        }
        errors.update(_WITH_BODY)
    errors.update(route.errors)
    operation["responses"] = {
        "200": _reply(schemas, route),
        **{str(status): _error(schemas, route, status, text) for status, text in sorted(errors.items())},
    }
    return operation


def build_document(routes: Sequence[Route], max_chain_length: int | None = None) -> dict[str, Any]:
    """The document; `max_chain_length` (jobs.max_chain_length, config) bounds a single job's containers."""
    schemas = _Schemas()
    schemas.of(ErrorBody)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(schemas, route)
    if max_chain_length is not None and "JobRequestBody" in schemas.components:
        # A longer chain is a 400 for a single job (a batch answers it in the item's place).
        schemas.components["JobRequestBody"]["properties"]["containers"]["maxItems"] = max_chain_length
    return _openapi30(
        {
            "openapi": "3.0.3",
            "info": {
                "title": "Infernet node REST API",
                "version": API_VERSION,
                "description": (
                    "Off-chain jobs, delegated subscriptions and job results (infernet-client 1.4.0 contract)."
                ),
            },
            "paths": paths,
            "components": {"schemas": dict(sorted(schemas.components.items()))},
        }
    )


def encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


async def serve(request: web.Request) -> web.Response:
    return web.Response(body=request.app[DOCUMENT], content_type="application/json")
