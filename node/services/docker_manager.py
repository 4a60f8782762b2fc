"""Managed containers on Docker, for `manage_containers: true`.

The manager is the node's container directory (see directory.py): it tells the
job gateway where each service answers, and `/info` which ones are running.
Everything goes through aiodocker and the node's aiohttp session, so nothing
blocks the event loop.

Life of one configured container (one supervisor task each):

1. **Image.** The local image is used if present; otherwise it is pulled once
   (with `docker.username`/`docker.password` if set), within `docker.pull_timeout`.
   An image that cannot be had leaves *that* container unavailable, with the
   reason in the log, in `/info`'s `unavailable_containers` and in the error of
   every job sent to it. The node keeps serving the others. Nothing is retried
   in a loop: fix the image and restart the node.
2. **Container.** Named `<docker.container_prefix><id>` and labelled as ours.
   An existing container is reused when it was created from the same
   configuration and image (a hash in a label), else it is replaced. A
   container of that name that this node did not create is never touched.
   Bridge mode (default) publishes the service's port 3000 on
   `docker.bind_host` (127.0.0.1): on `port` if configured, else on a port
   Docker picks (no collisions). Host mode gives the service `PORT` (and
   `HOST=127.0.0.1` unless the env says otherwise). GPUs: all, by device request.
3. **Ready** only once `GET /health` answers with a status below 500, polled
   with a short, growing interval until `docker.ready_timeout`.
4. **Watched.** Docker's event stream (filtered to our label) reports a dying
   container at once: it is marked unavailable immediately, so jobs sent to
   it fail fast with the reason. Docker's restart policy is "no": the manager
   restarts it itself, at most `docker.max_restarts` times in a row, with
   backoff (0.5 s, 1 s, 2 s, ... 30 s), and it is ready again when it answers.
   A container that then stays up for `STABLE_SECONDS` earns a fresh count.
   Past the limit it stays down, and the log shows its last output lines.
5. **Shutdown** per `docker.on_shutdown`: `leave` them running (the next start
   reuses them), `stop` them, or `remove` them.

Containers configured with a `url` are not managed: they are reached there
and always listed, as with `manage_containers: false`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import time
from typing import Any

import aiodocker
import aiohttp
from aiodocker.events import DockerEvents
from aiodocker.exceptions import DockerError

from node.config import Config, ContainerConfig
from node.logs import redact
from node.services.directory import Endpoint, endpoint_for, info_entry
from node.services.docker_spec import (
    LABEL_MANAGED,
    Spec,
    backoff_seconds,
    build_spec,
    container_name,
    has_tag_or_digest,
    labelled_port,
    ours,
    parse_docker_time_ns,
    published_port,
    qualified_image,
    reusable,
    service_port,
)

log = logging.getLogger(__name__)

# A container that stayed ready this long has its restart count reset.
STABLE_SECONDS = 300.0
HEALTH_PATH = "/health"
_EVENT_FILTERS = json.dumps({"type": ["container"], "label": [f"{LABEL_MANAGED}=true"]})
_LOG_TAIL_LINES = 20


class _Unavailable(Exception):
    """This container cannot be run; the message is shown to operators and clients."""

    def __init__(self, message: str, output_tail: str = "") -> None:
        super().__init__(message)
        self.output_tail = output_tail


class _Managed:
    """What the node knows about one managed container."""

    def __init__(self, config: ContainerConfig, name: str) -> None:
        self.config = config
        self.name = name
        self.state = "starting"  # starting | ready | restarting | failed | stopped
        self.reason = "starting"
        self.endpoint: Endpoint | None = None
        # Where the current run will answer, once it does.
        self.candidate: Endpoint | None = None
        self.docker_id: str | None = None
        # Docker's StartedAt of the current run: older "die" events are about a previous run.
        self.started_ns = 0
        self.died = asyncio.Event()
        self.died_ns = 0
        self.restarts = 0
        self.auto_port: int | None = None
        # Set once the first attempt has settled: ready, or given up.
        self.settled = asyncio.Event()

    def ready(self, endpoint: Endpoint) -> None:
        self.state, self.reason, self.endpoint = "ready", "", endpoint

    def down(self, state: str, reason: str) -> None:
        # The reason reaches clients (/info, job errors): a Docker error may quote a secret.
        self.state, self.reason, self.endpoint = state, redact(reason), None


class DockerManager:
    """Runs the configured containers and answers as the node's ContainerDirectory."""

    def __init__(
        self,
        config: Config,
        session: aiohttp.ClientSession,
        docker_factory: Any = aiodocker.Docker,
    ) -> None:
        self._config = config
        self._docker_config = config.docker
        self._session = session
        self._docker_factory = docker_factory
        self._docker: aiodocker.Docker | None = None
        default_timeout = config.jobs.container_timeout
        self._static = {c.id: endpoint_for(c, default_timeout) for c in config.containers if c.url}
        self._managed = {
            c.id: _Managed(c, container_name(self._docker_config, c.id)) for c in config.containers if not c.url
        }
        bind = self._docker_config.bind_host
        self._service_host = "127.0.0.1" if bind in ("0.0.0.0", "::") else bind
        self._image_locks: dict[str, asyncio.Lock] = {}
        self._ports_in_use: set[int] = {
            port for c in config.containers if (port := service_port(c, self._docker_config)) is not None
        }
        self._main: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    # -- the directory ------------------------------------------------------------------

    def endpoint(self, container_id: str) -> Endpoint | None:
        if container_id in self._static:
            return self._static[container_id]
        managed = self._managed.get(container_id)
        return managed.endpoint if managed is not None else None

    def unavailable_reason(self, container_id: str) -> str:
        managed = self._managed.get(container_id)
        if managed is None:
            return "not configured"
        return managed.reason or managed.state

    def running_info(self) -> list[dict[str, Any]]:
        return [info_entry(c) for c in self._config.containers if self.endpoint(c.id) is not None]

    def unavailable_info(self) -> list[dict[str, Any]]:
        return [
            {"id": m.config.id, "image": m.config.image, "state": m.state, "reason": m.reason}
            for m in self._managed.values()
            if m.endpoint is None
        ]

    async def explain_broken_call(self, container_id: str, wait: float = 1.0) -> str | None:
        """If the container died under a call, say so (Docker's event may trail the broken connection)."""
        managed = self._managed.get(container_id)
        if managed is None:
            return None
        if managed.endpoint is None:
            return managed.reason
        try:
            async with asyncio.timeout(wait):
                await managed.died.wait()
        except TimeoutError:
            return None
        return managed.reason

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Start every container; wait (at most `docker.start_wait`) until each is ready or has failed."""
        self._main = asyncio.create_task(self._run(), name="docker-manager")
        if not self._managed:
            return
        wait = self._docker_config.start_wait
        pending = [m for m in self._managed.values()]
        try:
            async with asyncio.timeout(wait):
                await asyncio.gather(*(m.settled.wait() for m in pending))
        except TimeoutError:
            late = ", ".join(m.config.id for m in pending if not m.settled.is_set())
            log.warning("containers still starting after %gs (docker.start_wait): %s; serving meanwhile", wait, late)
        ready = [m.config.id for m in pending if m.state == "ready"]
        log.info("containers ready: %s", ", ".join(ready) or "none")

    async def close(self) -> None:
        """Stop supervising, then leave, stop or remove the containers (docker.on_shutdown)."""
        self._closing = True
        for managed in self._managed.values():
            managed.down("stopped", "the node is shutting down")
        tasks = [task for task in (self._main, *self._tasks) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        docker = self._docker
        if docker is None:
            return
        try:
            action = self._docker_config.on_shutdown
            if action != "leave":
                await asyncio.gather(
                    *(self._shut(managed, remove=action == "remove") for managed in self._managed.values())
                )
        finally:
            await docker.close()

    async def _shut(self, managed: _Managed, remove: bool) -> None:
        if managed.docker_id is None:
            return
        assert self._docker is not None
        container = self._docker.containers.container(managed.docker_id)
        try:
            await container.stop(t=self._docker_config.stop_timeout)
            if remove:
                await container.delete(force=True)
            log.info("container %s %s", managed.name, "removed" if remove else "stopped")
        except DockerError as error:
            if error.status != 404:
                action = "remove" if remove else "stop"
                log.warning("could not %s container %s: %s", action, managed.name, error.message)

    async def _run(self) -> None:
        try:
            since = await self._connect()
            events_task = asyncio.create_task(self._watch_events(since), name="docker-events")
            self._tasks.append(events_task)
            for managed in self._managed.values():
                self._tasks.append(asyncio.create_task(self._supervise(managed), name=f"docker-{managed.config.id}"))
        except asyncio.CancelledError:
            raise
        except Exception as error:  # never let the node die of this
            log.exception("the Docker manager failed")
            for managed in self._managed.values():
                managed.down("failed", f"the Docker manager failed: {error}")
                managed.settled.set()

    async def _connect(self) -> str:
        """Connect to the daemon, retrying with backoff; return its clock as an events `since`."""
        attempt = 0
        while True:
            attempt += 1
            try:
                docker = self._docker_factory()
            except Exception as error:  # aiodocker finds no socket: AssertionError, ValueError
                docker, failure = None, f"no Docker daemon found ({type(error).__name__}: {error})"
            else:
                try:
                    info = await docker.system.info()
                    self._docker = docker
                    log.info("connected to Docker %s", info.get("ServerVersion", "?"))
                    return _events_since(info.get("SystemTime"))
                except (DockerError, aiohttp.ClientError, OSError, TimeoutError) as error:
                    failure = f"the Docker daemon does not answer: {getattr(error, 'message', None) or error}"
                    await docker.close()
            delay = backoff_seconds(attempt, first=1.0)
            reason = f"{failure}; retrying in {delay:g}s"
            if attempt == 1 or attempt % 10 == 0:
                log.error("docker: %s", reason)
            for managed in self._managed.values():
                managed.down("starting", reason)
                # Don't hold the node's start up waiting for a daemon that is not there.
                managed.settled.set()
            await asyncio.sleep(delay)

    # -- one container -------------------------------------------------------------------

    async def _supervise(self, managed: _Managed) -> None:
        container_id = managed.config.id
        limit = self._docker_config.max_restarts
        try:
            image_id = await self._ensure_image(managed)
            while True:
                try:
                    await self._ensure_running(managed, image_id)
                    outcome = await self._wait_ready(managed)
                except DockerError as error:
                    outcome, why = "error", f"Docker refused to run it: {error.message}"
                else:
                    why = managed.reason
                if outcome == "ready":
                    ready_at = time.monotonic()
                    log.info(
                        "container %s is ready at %s",
                        container_id,
                        managed.endpoint.base_url if managed.endpoint else "?",
                    )
                    managed.settled.set()
                    await managed.died.wait()
                    why = managed.reason
                    if time.monotonic() - ready_at >= STABLE_SECONDS:
                        managed.restarts = 0
                    log.warning("container %s went down: %s", container_id, why)
                elif outcome == "timeout":
                    why = f"its service did not answer GET {HEALTH_PATH} within {self._docker_config.ready_timeout:g}s"
                    await self._stop_quietly(managed)
                if managed.restarts >= limit:
                    raise _Unavailable(
                        f"{why}; not restarted again (docker.max_restarts is {limit})",
                        await self._log_tail(managed),
                    )
                managed.restarts += 1
                delay = backoff_seconds(managed.restarts)
                managed.down("restarting", f"{why}; restarting it (attempt {managed.restarts} of {limit})")
                log.warning("container %s: %s in %gs", container_id, managed.reason, delay)
                await asyncio.sleep(delay)
        except _Unavailable as error:
            managed.down("failed", str(error))
            log.error(
                "container %s is unavailable: %s%s",
                container_id,
                error,
                f"\nlast lines of its output:\n{error.output_tail}" if error.output_tail else "",
            )
        except asyncio.CancelledError:
            raise
        except Exception as error:
            managed.down("failed", f"unexpected error managing it: {error}")
            log.exception("container %s: unexpected error; it stays unavailable", container_id)
        finally:
            managed.settled.set()

    async def _ensure_image(self, managed: _Managed) -> str:
        """The local image's id, pulling it first if it is missing."""
        assert self._docker is not None
        image = managed.config.image
        managed.down("starting", f"looking for image {image}")
        lock = self._image_locks.setdefault(image, asyncio.Lock())
        async with lock:
            try:
                return str((await self._docker.images.inspect(image))["Id"])
            except DockerError as error:
                if error.status != 404:
                    raise _Unavailable(f"cannot inspect image {image}: {error.message}") from None
            managed.down("starting", f"pulling image {image}")
            log.info("image %s is not present locally; pulling it", image)
            timeout = self._docker_config.pull_timeout
            try:
                async with asyncio.timeout(timeout):
                    await self._pull(image)
            except TimeoutError:
                raise _Unavailable(
                    f"image {image} is not present locally, and pulling it took longer than {timeout:g}s "
                    "(docker.pull_timeout)"
                ) from None
            except DockerError as error:
                raise _Unavailable(
                    f"image {image} is not present locally and could not be pulled: {error.message}"
                ) from None
            except ValueError as error:
                raise _Unavailable(f"image {image} cannot be pulled: {error}") from None
            try:
                image_id = str((await self._docker.images.inspect(image))["Id"])
            except DockerError as error:
                raise _Unavailable(f"image {image} was pulled but cannot be inspected: {error.message}") from None
            log.info("pulled image %s", image)
            return image_id

    async def _pull(self, image: str) -> None:
        assert self._docker is not None
        docker = self._docker_config
        tag = None if has_tag_or_digest(image) else "latest"
        if docker.username and docker.password:
            auth = {"username": docker.username, "password": docker.password.get_secret_value()}
            await self._docker.images.pull(qualified_image(image), auth=auth, tag=tag)
        else:
            await self._docker.images.pull(image, tag=tag)

    def _spec(self, managed: _Managed, image_id: str) -> Spec:
        if (
            self._docker_config.network_mode == "host"
            and service_port(managed.config, self._docker_config) is None
            and managed.auto_port is None
        ):
            managed.auto_port = _free_port(self._ports_in_use)
            self._ports_in_use.add(managed.auto_port)
        return build_spec(managed.config, self._docker_config, image_id, managed.auto_port)

    async def _inspect(self, name: str) -> dict[str, Any] | None:
        assert self._docker is not None
        try:
            return await self._docker.containers.container(name).show()
        except DockerError as error:
            if error.status == 404:
                return None
            raise

    async def _ensure_running(self, managed: _Managed, image_id: str) -> None:
        """Create (or reuse) the container and start it; record its run and its port."""
        assert self._docker is not None
        spec = self._spec(managed, image_id)
        existing = await self._inspect(managed.name)
        if existing is not None and not ours(existing):
            raise _Unavailable(
                f"a container named {managed.name} exists that this node did not create; "
                "remove it or change docker.container_prefix"
            )
        if existing is not None and not reusable(existing, spec):
            log.info("container %s exists with another configuration or image; replacing it", managed.name)
            await self._docker.containers.container(existing["Id"]).delete(force=True)
            existing = None
        if existing is None:
            managed.down("starting", f"creating container {managed.name}")
            created = await self._docker.containers.create(spec.body, name=managed.name)
            docker_id = created.id
            log.info("created container %s from %s", managed.name, managed.config.image)
        else:
            docker_id = existing["Id"]
        managed.docker_id = docker_id
        container = self._docker.containers.container(docker_id)
        running = bool(existing and (existing.get("State") or {}).get("Running"))
        if running:
            log.info("reusing running container %s", managed.name)
        else:
            managed.down(managed.state, f"starting container {managed.name}")
            await container.start()
        inspect = await container.show()
        started_ns = parse_docker_time_ns((inspect.get("State") or {}).get("StartedAt")) or 0
        managed.started_ns = started_ns
        if managed.died.is_set() and managed.died_ns < started_ns:
            managed.died.clear()  # that death was the previous run's
        if self._docker_config.network_mode == "host":
            port = labelled_port(inspect) or spec.host_port
        else:
            port = published_port(inspect)
        managed.candidate = None
        if port is None:
            state = inspect.get("State") or {}
            if not state.get("Running"):
                managed.down(managed.state, f"container exited at once with code {state.get('ExitCode')}")
                return
            raise _Unavailable(f"container {managed.name} has no published port for the service")
        managed.candidate = endpoint_for(managed.config, self._config.jobs.container_timeout, port, self._service_host)
        managed.down(managed.state, f"waiting for its service to answer on port {port}")

    async def _wait_ready(self, managed: _Managed) -> str:
        """ "ready", "died" or "timeout": poll GET /health until the deadline, or until it dies."""
        endpoint = managed.candidate
        if endpoint is None or managed.died.is_set():
            return "died"
        url = f"{endpoint.base_url}{HEALTH_PATH}"
        deadline = time.monotonic() + self._docker_config.ready_timeout
        interval = 0.1
        while True:
            if managed.died.is_set():
                return "died"
            if await self._answers(url):
                if managed.died.is_set():
                    return "died"
                managed.ready(endpoint)
                return "ready"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "timeout"
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(interval, remaining)):
                    await managed.died.wait()
            interval = min(interval * 1.5, 1.0)

    async def _answers(self, url: str) -> bool:
        """Whether the service answers GET `url` (any status below 500: a 404 still means it is up)."""
        try:
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                return response.status < 500
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def _stop_quietly(self, managed: _Managed) -> None:
        if self._docker is None or managed.docker_id is None:
            return
        with contextlib.suppress(DockerError):
            await self._docker.containers.container(managed.docker_id).stop(t=self._docker_config.stop_timeout)

    async def _log_tail(self, managed: _Managed) -> str:
        if self._docker is None or managed.docker_id is None:
            return ""
        try:
            lines = await self._docker.containers.container(managed.docker_id).log(
                stdout=True, stderr=True, tail=_LOG_TAIL_LINES
            )
        except DockerError:
            return ""
        return "".join(lines).rstrip()

    # -- Docker's event stream -------------------------------------------------------------

    async def _watch_events(self, since: str) -> None:
        assert self._docker is not None
        failures = 0
        while True:
            events = DockerEvents(self._docker)
            subscriber = events.subscribe(create_task=False)
            runner = asyncio.create_task(events.run(filters=_EVENT_FILTERS, since=since), name="docker-events-stream")
            opened = time.monotonic()
            try:
                while True:
                    event = await subscriber.get()
                    if event is None:
                        break
                    since = _event_since(event) or since
                    try:
                        self._on_event(event)
                    except Exception:
                        log.exception("could not handle a Docker event: %r", event)
            finally:
                runner.cancel()
                results = await asyncio.gather(runner, return_exceptions=True)
            if self._closing:
                return
            failures = 0 if time.monotonic() - opened > 30 else failures + 1
            error = results[0] if results and isinstance(results[0], BaseException) else None
            delay = backoff_seconds(failures, first=0.5, cap=10.0)
            log.warning("Docker's event stream ended (%s); reconnecting in %gs", error or "closed by the daemon", delay)
            await asyncio.sleep(delay)
            await self._reconcile()

    def _find(self, docker_id: str | None, name: str | None) -> _Managed | None:
        for managed in self._managed.values():
            if docker_id and managed.docker_id == docker_id:
                return managed
            if name and managed.name == name:
                return managed
        return None

    def _on_event(self, event: dict[str, Any]) -> None:
        action = str(event.get("Action") or event.get("status") or "")
        actor = event.get("Actor") or {}
        attributes = actor.get("Attributes") or {}
        managed = self._find(actor.get("ID") or event.get("id"), attributes.get("name"))
        if managed is None:
            return
        if action == "oom":
            log.warning("container %s ran out of memory", managed.config.id)
        elif action == "die":
            when = int(event.get("timeNano") or 0)
            if when and when < managed.started_ns:
                return  # a previous run's death, delivered late or replayed
            if self._closing or managed.state == "failed":
                return
            code = attributes.get("exitCode", "?")
            managed.down("restarting", f"container exited with code {code}")
            managed.died_ns = when or time.time_ns()
            managed.died.set()

    async def _reconcile(self) -> None:
        """After missing events: whatever we think is up but is not running has died."""
        for managed in self._managed.values():
            if managed.state != "ready" or managed.docker_id is None:
                continue
            try:
                inspect = await self._inspect(managed.docker_id)
            except DockerError:
                continue
            if inspect is None or not (inspect.get("State") or {}).get("Running"):
                code = (inspect or {}).get("State", {}).get("ExitCode", "?") if inspect else "?"
                managed.down("restarting", f"container exited with code {code}" if inspect else "container was removed")
                managed.died_ns = time.time_ns()
                managed.died.set()


def _free_port(taken: set[int]) -> int:
    """A free TCP port on 127.0.0.1 that no other container of ours uses."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in taken:
            return port
    raise _Unavailable("could not find a free port for the service")


def _events_since(system_time: str | None) -> str:
    nanos = parse_docker_time_ns(system_time) or time.time_ns()
    return _ns_to_since(nanos)


def _ns_to_since(nanos: int) -> str:
    return f"{nanos // 1_000_000_000}.{nanos % 1_000_000_000:09d}"


def _event_since(event: dict[str, Any]) -> str | None:
    nanos = event.get("timeNano")
    return _ns_to_since(int(nanos)) if isinstance(nanos, int) and nanos > 0 else None
