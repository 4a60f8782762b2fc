"""Schemathesis, with every check (`--checks all`), against the node's own served
/openapi.json: every operation, valid and invalid input, in all its phases
(coverage, fuzzing, stateful), a bounded number of generated cases each
(SCHEMATHESIS_EXAMPLES per operation, default 30; SCHEMATHESIS_SEED replays a run).

No server error, and no answer that contradicts the document (status codes,
content types, headers, bodies, valid input refused, invalid input accepted).
The one configured exception is in the repository's schemathesis.toml: 405 is
the contract's answer to a well-formed job the guardian refuses.

The CLI runs in a subprocess (schemathesis' pytest loader breaks on pytest 9),
as an operator would run it against their node.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.api.routes import ROUTES
from tests.support.processes import NodeProcess, node_config, service_process

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "30"))
SEED = os.environ.get("SCHEMATHESIS_SEED")

pytestmark = pytest.mark.slow


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


def test_schemathesis_with_all_checks_finds_no_failure(node: NodeProcess, tmp_path: Path) -> None:
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(ROOT / "schemathesis.toml"),
        "--no-color",
        "run",
        "--checks",
        "all",
        "--max-examples",
        str(EXAMPLES),
        "--workers",
        "1",
        *(["--seed", SEED] if SEED else []),
        f"{node.url}/openapi.json",
    ]
    # cwd: the CLI leaves its example database and reports where it runs.
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-20_000:]
    # Every operation of the route table was in the served document, and tested (all but
    # GET /openapi.json: the CLI leaves out the operation it loaded the document from).
    operations = len(ROUTES) - 1
    assert f"{operations} selected / {operations} total" in output, output[-5_000:]
    assert f"Tested: {operations}" in output, output[-5_000:]
    # Every phase ran and nothing failed (the summary lists failures by code otherwise).
    for phase in ("Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in output, output[-5_000:]
