"""The official Gonka client (`gonka-openai` 0.2.6) in a venv of its own (scripts/gonka-venv.sh):
it needs openai<3, while the node's tests use the 3.x SDK. Tests reach it through processes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import ROOT
from tests.support.requirements import unavailable

GONKA_VENV = Path(os.environ.get("INFERNET_GONKA_VENV", ROOT / ".venv-gonka"))
BUILD_SCRIPT = ROOT / "scripts" / "gonka-venv.sh"


@pytest.fixture(scope="session")
def gonka_python() -> Path:
    """The gonka venv's interpreter, built on first use (idempotent)."""
    try:
        done = subprocess.run(
            [str(BUILD_SCRIPT), str(GONKA_VENV)], capture_output=True, text=True, timeout=900, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        unavailable(f"scripts/gonka-venv.sh did not run: {error}")
    if done.returncode != 0:
        unavailable(f"scripts/gonka-venv.sh failed: {done.stderr.strip()[-500:]}")
    return GONKA_VENV / "bin" / "python"


def _environment() -> dict[str, str]:
    environment = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # The client reads its endpoints and key from these when not given: never from the developer's shell.
    for name in list(environment):
        if name.startswith(("GONKA_", "OPENAI_")):
            del environment[name]
    return environment


def run_snippet(python: Path, code: str, arguments: Any) -> Any:
    """Run `code` in the gonka venv with `args` (JSON) bound; it prints one JSON value, returned here."""
    script = "import json, sys\nargs = json.loads(sys.argv[1])\n" + textwrap.dedent(code)
    done = subprocess.run(
        [str(python), "-c", script, json.dumps(arguments)],
        capture_output=True,
        text=True,
        timeout=120,
        env=_environment(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


async def run_snippet_async(python: Path, code: str, arguments: Any, timeout: float = 120) -> Any:
    """run_snippet without blocking the event loop (a node served from this process must answer)."""
    script = "import json, sys\nargs = json.loads(sys.argv[1])\n" + textwrap.dedent(code)
    process = await asyncio.create_subprocess_exec(
        str(python),
        "-c",
        script,
        json.dumps(arguments),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_environment(),
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode == 0, stderr.decode(errors="replace")
    return json.loads(stdout.decode().strip().splitlines()[-1])
