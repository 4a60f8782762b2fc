"""The OpenAPI document comes from the route table, the same table the router is built from."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from node.api import wire
from node.api.openapi import DOCUMENT, build_document
from node.api.routes import ROUTES, setup_routes

SCHEMAS = "#/components/schemas/"


def _document() -> dict[str, Any]:
    return build_document(ROUTES)


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        return found.union(*(_refs(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(item) for item in node))
    return set()


def _request_schema(document: dict[str, Any], method: str, path: str) -> Any:
    return document["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]


def test_the_router_and_the_document_list_the_same_operations() -> None:
    app = web.Application()
    setup_routes(app)
    routed = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    documented = {(method.upper(), path) for path, item in _document()["paths"].items() for method in item}
    assert routed == documented
    # The app serves the document built from the same table.
    assert json.loads(app[DOCUMENT]) == _document()


def test_every_reference_resolves_and_every_operation_is_named() -> None:
    document = _document()
    components = document["components"]["schemas"]
    for ref in _refs(document):
        assert ref.startswith(SCHEMAS) and ref[len(SCHEMAS) :] in components, ref
    ids = [operation["operationId"] for item in document["paths"].values() for operation in item.values()]
    assert len(ids) == len(set(ids))


def test_the_stream_route_takes_what_post_api_jobs_takes() -> None:
    document = _document()
    assert _request_schema(document, "post", "/api/jobs/stream") == _request_schema(document, "post", "/api/jobs")


def test_a_single_job_names_at_least_one_container_but_a_batch_item_answers_in_place() -> None:
    components = _document()["components"]["schemas"]
    assert components["JobRequestBody"]["properties"]["containers"]["minItems"] == 1
    # A batch answers an empty list in the item's place (200), so its items document no minimum.
    assert "minItems" not in components["BatchJobRequestBody"]["properties"]["containers"]


def test_guardian_and_chain_refusals_are_documented_as_405() -> None:
    paths = _document()["paths"]
    for path in ("/api/jobs", "/api/jobs/stream"):
        refusal = paths[path]["post"]["responses"]["405"]
        assert "guardian" in refusal["description"] and "chain is not enabled" in refusal["description"]
        assert refusal["content"]["application/json"]["schema"] == {"$ref": SCHEMAS + "ErrorBody"}
    assert "cannot be streamed" in paths["/api/jobs/stream"]["post"]["responses"]["405"]["description"]


def test_every_route_documents_json_errors_and_bodies_their_limits() -> None:
    for route in ROUTES:
        responses = _document()["paths"][route.path][route.method.lower()]["responses"]
        assert {"200", "414", "429", "431", "500"} <= set(responses), route.path
        if route.body is not None:
            assert {"400", "413"} <= set(responses), route.path
        for status, answer in responses.items():
            if status == "200":
                continue
            # 414 and 431 come before routing, in the Infernet shape; the rest in the route's (OpenAI's on /v1).
            shape = "ErrorBody" if status in ("414", "431") else route.error_body.__name__
            assert answer["content"]["application/json"]["schema"] == {"$ref": SCHEMAS + shape}, (route.path, status)


def test_the_document_is_openapi_3_0() -> None:
    text = json.dumps(_document())
    assert _document()["openapi"] == "3.0.3"
    # JSON Schema 2020-12 spellings that OpenAPI 3.0 does not have.
    assert '"type": "null"' not in text and '"const"' not in text and "$defs" not in text
    assert _document()["components"]["schemas"]["JobResultBody"]["properties"]["result"]["nullable"] is True


def test_status_values_are_listed_though_any_string_parses() -> None:
    status = _document()["components"]["schemas"]["StatusBody"]["properties"]["status"]
    assert status["enum"] == ["success", "failed", "running"]
    assert wire.parse_status({"id": "x", "status": "done", "containers": []}).status == "done"  # the handler judges
