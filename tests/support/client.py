"""Drive Ritual's real `infernet-client` 1.4.0 from tests.

The client pins web3 6 and the node uses web3 8, so the client lives in its own virtual
environment (`scripts/client-venv.sh`, default `.venv-client`) and tests reach it only through
processes: the CLI (`run_cli`) or a small Python snippet run by the client's interpreter
(`run_library`). Both run in an empty temporary directory (so no `.env` is loaded: importing
infernet_ml calls `load_dotenv()`), with LOGLEVEL=WARNING and none of the CLI's environment
variables (SERVER_URL, ROUTER_URL, RPC_URL, ADDRESS, PRIVATE_KEY...) unless a test passes them.

`FakeRpc` is a tiny JSON-RPC server on 127.0.0.1 that answers `eth_chainId`, which is all the
client's `sub` command asks of a chain before it signs and posts the delegated subscription.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import tempfile
import textwrap
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from tests.support.processes import ROOT, free_port
from tests.support.requirements import unavailable

CLIENT_VENV = Path(os.environ.get("INFERNET_CLIENT_VENV", ROOT / ".venv-client"))
BUILD_SCRIPT = ROOT / "scripts" / "client-venv.sh"

# Variables the CLI or infernet_ml read; never inherited from the developer's shell.
_CLIENT_ENV_VARS = (
    "SERVER_URL",
    "ROUTER_URL",
    "RPC_URL",
    "ADDRESS",
    "PRIVATE_KEY",
    "FACTORY_ADDRESS",
    "LOGLEVEL",
    "PYTHONPATH",
    "VIRTUAL_ENV",
)

# The monorepo's test key (client-contract.md §5.3) and its address.
TEST_PRIVATE_KEY = "0xb25c7db31feed9122727bf0939dc769a96564b2de4c4726d035b36ecf1e5b364"
TEST_SIGNER = "0x5ce9454909639D2D17A3F753ce7d93fa0b9aB12E"
TEST_COORDINATOR = "0x1Fbdb2315678aFecb369F032D93f642f64140AA3"
ZERO_ADDRESS = "0x0000000000000000000000000000000000000000"


class ClientUnavailable(RuntimeError):
    """The client venv could not be built (the message says why)."""


def client_bin(name: str) -> Path:
    return CLIENT_VENV / "bin" / name


def ensure_client_venv(timeout: float = 900.0) -> Path:
    """Build (or reuse) the client venv with scripts/client-venv.sh; return its directory."""
    try:
        completed = subprocess.run(
            ["bash", str(BUILD_SCRIPT), str(CLIENT_VENV)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as error:
        raise ClientUnavailable(f"client-venv.sh took longer than {timeout:g}s") from error
    if completed.returncode != 0:
        output = "\n".join(
            line
            for line in (completed.stdout + completed.stderr).splitlines()
            if "is ignored: it is neither a file nor a directory" not in line
        )
        raise ClientUnavailable(f"client-venv.sh failed (exit {completed.returncode}):\n{output[-4000:]}")
    return CLIENT_VENV


def looks_offline(message: str) -> bool:
    """Whether a failed build failed because no package index could be reached."""
    needles = (
        "Temporary failure in name resolution",
        "Network is unreachable",
        "Failed to establish a new connection",
        "Name or service not known",
        "NewConnectionError",
        "ConnectTimeoutError",
        "Could not fetch URL",
    )
    return any(needle.lower() in message.lower() for needle in needles)


def client_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _CLIENT_ENV_VARS}
    env["LOGLEVEL"] = "WARNING"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class CliResult:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return (
            f"infernet-client {' '.join(self.args)} -> exit {self.returncode}\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )

    def json(self) -> Any:
        return json.loads(self.stdout)


def run_cli(
    *args: str,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60.0,
) -> CliResult:
    """Run `infernet-client ARGS...` in a clean environment and an empty directory."""
    with tempfile.TemporaryDirectory(prefix="infernet-cli-") as scratch:
        completed = subprocess.run(
            [str(client_bin("infernet-client")), *args],
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            env=client_env(env),
            cwd=str(cwd or scratch),
            timeout=timeout,
        )
    return CliResult(tuple(args), completed.returncode, completed.stdout, completed.stderr)


def run_cli_many(*calls: tuple[str, ...] | dict[str, Any], workers: int = 2) -> list[CliResult]:
    """Run independent CLI calls side by side (each is mostly the client's import time).

    A call is a tuple of arguments, or a dict {"args": (...), **run_cli keyword arguments}.
    """

    def one(call: tuple[str, ...] | dict[str, Any]) -> CliResult:
        if isinstance(call, dict):
            options = dict(call)
            return run_cli(*options.pop("args"), **options)
        return run_cli(*call)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, calls))


_LIBRARY_PRELUDE = """
import asyncio, json, sys, traceback
from infernet_client.node import NodeClient
from infernet_client.error import APIError

URL = sys.argv[1]
client = NodeClient(URL)


def _plain(value):
    if isinstance(value, bytes):
        return {"__bytes__": value.decode("utf-8", errors="replace")}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def describe_error(error):
    described = {"type": type(error).__name__, "message": str(error)}
    if isinstance(error, APIError):
        described.update(status_code=error.status_code, api_message=error.message, params=error.params)
    status = getattr(error, "status", None)
    if status is not None:
        described["status"] = status
    return described


async def capture(awaitable):
    \"\"\"{"ok": True, "value": ...} or {"ok": False, "error": {...}}: for calls expected to raise.\"\"\"
    try:
        return {"ok": True, "value": _plain(await awaitable)}
    except Exception as error:
        return {"ok": False, "error": describe_error(error)}

"""

_LIBRARY_EPILOGUE = """

try:
    _result = asyncio.run(main())
except Exception as _error:
    traceback.print_exc()
    _result = {"__uncaught__": describe_error(_error)}
print("\\n@@RESULT@@" + json.dumps(_plain(_result)))
"""


class LibraryError(AssertionError):
    pass


def run_library(snippet: str, url: str, timeout: float = 120.0) -> Any:
    """Run `snippet` (which defines `async def main()`) with the client's interpreter.

    In scope: `client` (a NodeClient for `url`), `URL`, `NodeClient`, `APIError`, `asyncio`,
    `json`, and `capture(awaitable)`, which turns an exception into a JSON-able description.
    Returns main()'s JSON-able result (bytes become {"__bytes__": text}). An uncaught exception
    fails the call with the traceback.
    """
    source = _LIBRARY_PRELUDE + textwrap.dedent(snippet) + _LIBRARY_EPILOGUE
    with tempfile.TemporaryDirectory(prefix="infernet-lib-") as scratch:
        script = Path(scratch) / "snippet.py"
        script.write_text(source)
        completed = subprocess.run(
            [str(client_bin("python")), str(script), url],
            capture_output=True,
            text=True,
            env=client_env(),
            cwd=scratch,
            timeout=timeout,
        )
    marker = "@@RESULT@@"
    if marker not in completed.stdout:
        raise LibraryError(
            f"client snippet exited {completed.returncode} without a result\n"
            f"--- stdout ---\n{completed.stdout}\n--- stderr ---\n{completed.stderr}"
        )
    result = json.loads(completed.stdout.rsplit(marker, 1)[1])
    if isinstance(result, dict) and "__uncaught__" in result:
        raise LibraryError(f"client snippet raised {result['__uncaught__']}\n{completed.stderr}")
    return result


def is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except (ValueError, AttributeError, TypeError):
        return False


def subscription_params(containers: list[str], **overrides: Any) -> dict[str, Any]:
    """The 11 keys of infernet_client.chain.subscription.Subscription (client-contract.md §5.1)."""
    params: dict[str, Any] = {
        "owner": "0x5FbDB2315678afecb367f032d93F642f64180aa3",
        "active_at": 0,
        "period": 3,
        "frequency": 2,
        "redundancy": 2,
        "containers": containers,
        "lazy": False,
        "verifier": ZERO_ADDRESS,
        "payment_amount": 0,
        "payment_token": ZERO_ADDRESS,
        "wallet": ZERO_ADDRESS,
    }
    params.update(overrides)
    return params


class FakeRpc:
    """A JSON-RPC endpoint on 127.0.0.1 that answers eth_chainId, run in a thread of its own.

    Every request is kept in `requests`; methods other than eth_chainId get a JSON-RPC error.
    """

    def __init__(self, chain_id: int = 31337) -> None:
        self.chain_id = chain_id
        self.port = free_port()
        self.requests: list[dict[str, Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            parse_error = {"code": -32700, "message": "Parse error"}
            return web.json_response({"jsonrpc": "2.0", "id": None, "error": parse_error})
        calls = body if isinstance(body, list) else [body]
        answers = []
        for call in calls:
            self.requests.append(call)
            if call.get("method") == "eth_chainId":
                answers.append({"jsonrpc": "2.0", "id": call.get("id"), "result": hex(self.chain_id)})
            else:
                answers.append(
                    {
                        "jsonrpc": "2.0",
                        "id": call.get("id"),
                        "error": {"code": -32601, "message": f"method {call.get('method')} not served by FakeRpc"},
                    }
                )
        return web.json_response(answers if isinstance(body, list) else answers[0])

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_post("/", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        await site.start()
        self._stop = asyncio.Event()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as error:  # surfaced by start()
            self._failure = error
            self._ready.set()
        finally:
            self._loop.close()

    def start(self) -> FakeRpc:
        self._thread = threading.Thread(target=self._run, name="fake-rpc", daemon=True)
        self._thread.start()
        if not self._ready.wait(10) or self._failure is not None:
            raise RuntimeError(f"FakeRpc did not start: {self._failure!r}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FakeRpc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def client_venv() -> Path:
    """The real infernet-client 1.4.0 venv, built on first use (skipped only when offline outside CI)."""
    try:
        return ensure_client_venv()
    except ClientUnavailable as error:
        if looks_offline(str(error)):
            unavailable(f"infernet-client venv cannot be built without network access to PyPI: {error}")
        raise
