"""Schemathesis against the node's own served /openapi.json: every operation,
valid and invalid input, a bounded number of generated cases each
(SCHEMATHESIS_EXAMPLES, default 30).

No server error, and no answer that contradicts the document (status codes,
content types, headers, bodies).

schemathesis' own pytest loader (`from_fixture`) breaks on pytest 9 (it reads
the removed `Node._nodeid`), so each operation's strategy is drawn here with
Hypothesis directly; the operations are listed from the same document the node
serves, and the served one is checked to list exactly these.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.openapi import from_url

from node.api.openapi import build_document
from tests.support.processes import NodeProcess, node_config, service_process

EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "30"))
DOCUMENT = build_document()
OPERATIONS = [(method.upper(), path) for path, item in DOCUMENT["paths"].items() for method in sorted(item)]
# Invalid input exists only where there is input.
WITH_INPUT = {
    (method.upper(), path)
    for path, item in DOCUMENT["paths"].items()
    for method, operation in item.items()
    if operation.get("parameters") or operation.get("requestBody")
}
CONFIG = SchemathesisConfig.from_dict({
    "operations": [{
        # A well-formed job may still be refused by the guardian: 405 is the
        # contract's answer for that (client-contract.md, trap 7), and documented.
        "include-path-regex": "^/api/jobs",
        "include-method": "POST",
        "checks": {"positive_data_acceptance": {
            "expected-statuses": ["2xx", "3xx", "401", "403", "404", "405", "409", "429", "5xx"],
        }},
    }],
})


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    workdir: Path = tmp_path_factory.mktemp("schemathesis")
    with service_process("hello-world") as echo_url:
        config = node_config(
            workdir,
            [{"id": "echo", "url": echo_url}, {"id": "hello-world", "url": echo_url}],
            server={"max_body_bytes": 64 * 1024},
        )
        node = NodeProcess(config, workdir).start()
        try:
            yield node
        finally:
            node.stop()


@pytest.fixture(scope="module")
def served_schema(node: NodeProcess) -> schemathesis.BaseSchema:
    return from_url(f"{node.url}/openapi.json", config=CONFIG)


def test_served_document_lists_every_operation(served_schema: schemathesis.BaseSchema) -> None:
    operations = [result.ok() for result in served_schema.get_all_operations()]  # type: ignore[union-attr]
    served = {(operation.method.upper(), operation.path) for operation in operations}
    assert served == set(OPERATIONS)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_operation_conforms_to_the_document(
    served_schema: schemathesis.BaseSchema, node: NodeProcess, method: str, path: str, mode: GenerationMode
) -> None:
    if mode is GenerationMode.NEGATIVE and (method, path) not in WITH_INPUT:
        pytest.skip("no parameters or body to make invalid")
    operation = served_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=node.url, timeout=10)

    check()
