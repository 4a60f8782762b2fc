"""Run the services in containers/ for tests: as local processes or as their Docker images.

Everything binds 127.0.0.1 on a free port; containers use host networking and get the port
through env PORT, so no traffic leaves the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.processes import free_port, stop_process
from tests.support.requirements import unavailable

REPO_ROOT = Path(__file__).resolve().parents[3]
CONTAINERS_DIR = REPO_ROOT / "containers"
PROVISION_SCRIPT = REPO_ROOT / "scripts" / "provision.sh"
IMAGES = {name: f"infernet-local/{name}:latest" for name in ("hello-world", "streaming", "iris-classifier")}


def wait_until_healthy(url: str, why_dead: Callable[[], str | None], deadline_s: float = 30.0) -> None:
    """Poll GET {url}/health; `why_dead` returns a reason (with logs) once the server has exited."""
    end = time.monotonic() + deadline_s
    last_error: Exception | None = None
    while time.monotonic() < end:
        reason = why_dead()
        if reason is not None:
            raise RuntimeError(f"service at {url} died before answering: {reason}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                if json.load(response) == {"status": "healthy"}:
                    return
        except (OSError, ValueError) as error:  # not listening yet
            last_error = error
        time.sleep(0.1)
    raise TimeoutError(f"{url}/health did not answer within {deadline_s}s (last error: {last_error})")


@contextmanager
def local_service(name: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """containers/<name>/app.py run by this interpreter (the project venv's aiohttp); yields its URL."""
    port = free_port()
    environment = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), **(env or {})}
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, str(CONTAINERS_DIR / name / "app.py")], env=environment, stdout=log, stderr=log
        )

        def why_dead() -> str | None:
            if process.poll() is None:
                return None
            log.seek(0)
            return f"exit code {process.returncode}; log:\n{log.read().decode(errors='replace')}"

        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_healthy(url, why_dead, deadline_s=15.0)
            yield url
        finally:
            stop_process(process)


def require_docker_images(timeout_s: float = 1800) -> None:
    """A Docker daemon and current service images, or skip (fail in CI)."""
    reason = docker_unavailable_reason()
    if reason is not None:
        unavailable(f"no Docker daemon: {reason}")
    provision_images(timeout_s)


def docker_unavailable_reason() -> str | None:
    """None when a Docker daemon answers, else why not (for a skip message)."""
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=20)
    except FileNotFoundError:
        return "no docker client on PATH"
    except subprocess.TimeoutExpired:
        return "'docker info' did not answer within 20 s"
    if result.returncode != 0:
        return f"'docker info' failed: {result.stderr.strip()[-300:]} (run scripts/provision.sh)"
    return None


def provision_images(timeout_s: float = 1800) -> None:
    """Build or refresh the service images (a no-op taking about a second when they are current)."""
    result = subprocess.run(["bash", str(PROVISION_SCRIPT)], capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0:
        raise RuntimeError(f"scripts/provision.sh failed:\n{result.stdout}\n{result.stderr}")


@contextmanager
def service_container(image: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run `image` with host networking on a free loopback port; yields its URL, removes it after."""
    port = free_port()
    name = f"infernet-test-{image.split('/')[-1].split(':')[0]}-{port}"
    # No --rm: `docker rm -f` below removes it, and --rm would race with that removal.
    command = ["docker", "run", "-d", "--name", name, "--network", "host", "-e", f"PORT={port}", "-e", "HOST=127.0.0.1"]
    for key, value in (env or {}).items():
        command += ["-e", f"{key}={value}"]
    subprocess.run([*command, image], check=True, capture_output=True, timeout=60)

    def why_dead() -> str | None:
        state = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", name], capture_output=True, text=True)
        if state.returncode == 0 and state.stdout.strip() == "true":
            return None
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
        return f"container {name} is not running; logs:\n{logs.stdout}{logs.stderr}"

    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, why_dead, deadline_s=30.0)
        yield url
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)


def job(data: Any, destination: int = 1, **extra: Any) -> dict[str, Any]:
    """A /service_output body as the node sends it."""
    return {"source": 1, "destination": destination, "data": data, **extra}


async def post_json(url: str, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.post(f"{url}/service_output", json=body) as response:
        return response.status, await response.json()


async def post_raw(url: str, raw: bytes) -> tuple[int, str, Any]:
    """POST bytes as they are (for malformed bodies); returns status, content type and JSON body."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{url}/service_output", data=raw, headers={"Content-Type": "application/json"}) as response,
    ):
        return response.status, response.content_type, await response.json()


async def read_stream(url: str, body: Any) -> tuple[aiohttp.ClientResponse, list[bytes]]:
    """POST a stream job and collect the raw reads, relayed the way the node does (iter_any)."""
    async with aiohttp.ClientSession() as session, session.post(f"{url}/service_output", json=body) as response:
        response.raise_for_status()
        reads = [chunk async for chunk in response.content.iter_any()]
        return response, reads


async def get_json(url: str, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(f"{url}{path}") as response:
        return response.status, await response.json()
