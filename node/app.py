"""The composition root: builds every part from the Config and owns lifecycles."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from node.api.appkeys import (
    CHAIN_ROLE,
    CHAIN_STATUS,
    CLAIM_COUNTS,
    CLUSTER,
    CONFIG,
    DIRECTORY,
    JOB_DESK,
    MAX_BODY,
    STORE_HEALTH,
)
from node.api.auth import AUTH, AuthSettings, auth_middleware
from node.api.client_ip import CLIENT_IP_TRUSTED
from node.api.errors import json_errors
from node.api.metrics import METRICS, http_metrics
from node.api.openai_routes import MODELS, ModelCatalog
from node.api.ratelimit import RATE_LIMITS, RateLimits, TokenBuckets, rate_limiter
from node.api.routes import setup_routes
from node.auth.quotas import Limits
from node.auth.service import AuthService, Mode
from node.auth.signatures import SignatureSettings, SignatureVerifier
from node.cluster import Cluster, default_node_id
from node.config import AuthConfig, Config, ContainerConfig
from node.jobs.claims import ClaimKeeper
from node.jobs.desk import RESTART_REASON, JobDesk
from node.jobs.guardian import Guardian
from node.jobs.policy import ContainerPolicy
from node.jobs.queue import JobQueue
from node.logs import register_secrets
from node.metrics import NodeMetrics
from node.secrets import SecretScrubber
from node.services.directory import ContainerDirectory, StaticDirectory
from node.services.gateway import HttpServiceGateway
from node.services.http1 import Http1Pool
from node.store.auth_sql import AuthStore
from node.store.chain_repository import SqlChainRepository
from node.store.engine import StoreUnusable, open_store, sqlite_file
from node.store.jobs_sql import JobStore
from node.store.leases import SqlLeaseStore
from node.store.repositories import auth_repository, job_repository, on_sqlite
from node.store.server_jobs import ServerJobRepository
from node.store.server_rate_limit import ServerRateLimit
from node.thread_placement import Colocation

log = logging.getLogger(__name__)

REPOSITORY = web.AppKey("repository", JobStore)
NODE_ID = web.AppKey("node_id", str)
QUEUE = web.AppKey("job_queue", JobQueue)
ENGINE = web.AppKey("engine", AsyncEngine)


class StartupError(Exception):
    """The node cannot start; the message says why in one line (the CLI prints it, no traceback)."""


def container_policy(container: ContainerConfig) -> ContainerPolicy:
    """The guardian's view of a configured container (the domain reads no config model)."""
    return ContainerPolicy(container.id, container.external, container.generates_proofs, container.allowed_ips)


def build_app(config: Config) -> web.Application:
    register_secrets(config)  # before anything can log them
    metrics = NodeMetrics()
    # Outermost first: metrics see the final status, after errors became JSON.
    middlewares: list[Callable[..., object]] = [http_metrics(metrics), json_errors]
    if config.server.rate_limit.num_requests > 0:
        middlewares.append(rate_limiter())  # its counters come with the store (_store)
    # After the IP rate limit: a flood of bad credentials costs no signature check or store hop.
    middlewares.append(auth_middleware(_auth_settings(config.auth), metrics.auth_refused))
    app = web.Application(client_max_size=config.server.max_body_bytes, middlewares=middlewares)  # type: ignore[arg-type]
    app[CONFIG] = config
    app[MAX_BODY] = config.server.max_body_bytes
    app[CLIENT_IP_TRUSTED] = config.server.trusted_proxies
    app[METRICS] = metrics
    app[MODELS] = ModelCatalog(config.models(), int(time.time()))
    setup_routes(app)
    app.cleanup_ctx.append(_store)
    app.cleanup_ctx.append(_thread_placement)
    app.cleanup_ctx.append(_cluster)
    app.cleanup_ctx.append(_jobs)
    app.cleanup_ctx.append(_chain)
    app.cleanup_ctx.append(_pruner)
    app.cleanup_ctx.append(_auth_pruner)
    app.cleanup_ctx.append(_rate_window_pruner)
    app.on_shutdown.append(_stop_taking_jobs)
    return app


async def _store(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    try:
        engine = await open_store(config.store.url)
    except StoreUnusable as error:
        raise StartupError(str(error)) from None
    app[ENGINE] = engine
    app[NODE_ID] = node_id = config.cluster.node_id or default_node_id()
    # By store.url: an SQLite file (one node) or a SQL server, where each pending job is its
    # owner's while the owner's heartbeat lives (_cluster).
    app[REPOSITORY] = repository = job_repository(engine, node_id, config.jobs.queue_size)
    app[STORE_HEALTH] = repository.health
    app[AUTH] = _auth_service(config.auth, auth_repository(engine))
    limit = config.server.rate_limit
    if limit.num_requests > 0:
        # One node: its own token buckets. Several nodes on a server store: the store's counters.
        limits: RateLimits = (
            TokenBuckets(limit.num_requests, limit.period)
            if on_sqlite(engine)
            else ServerRateLimit(engine, limit.num_requests, limit.period)
        )
        app[RATE_LIMITS] = limits
    yield
    await repository.close()
    await engine.dispose()


async def _thread_placement(app: web.Application) -> AsyncIterator[None]:
    """The event loop's thread and the SQLite store's next to each other (node/thread_placement.py)."""
    sqlite = sqlite_file(app[ENGINE])
    if not app[CONFIG].server.colocate_threads or sqlite is None:
        yield
        return
    colocation = Colocation([threading.get_native_id(), *sqlite.hot_thread_ids()])
    colocation.start()
    try:
        yield
    finally:
        colocation.stop()


async def _jobs(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=30)
    session = aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",))
    manager = None
    directory: ContainerDirectory
    if config.manage_containers:
        from node.services.docker_manager import DockerManager  # aiodocker only for managed containers

        directory = manager = DockerManager(config, session)
        try:
            await manager.start()  # waits (bounded) until each container is ready or has failed
        except BaseException:
            # Stopped (Ctrl-C) or failed while the containers start: the ones already started
            # get docker.on_shutdown, as at any stop.
            await manager.close()
            await session.close()
            raise
    else:
        directory = StaticDirectory(config)
    metrics = app[METRICS]
    # Under the 5 s keep-alive of common servers (uvicorn, hypercorn): a connection
    # is never reused just as the service closes it.
    calls = Http1Pool(idle_seconds=4.0, max_body_bytes=config.jobs.max_result_bytes)
    gateway = HttpServiceGateway(
        session,
        calls,
        directory,
        config.jobs.stream_timeout,
        config.jobs.resources_timeout,
        observe_call=metrics.container_call,
        max_result_bytes=config.jobs.max_result_bytes,
        max_stream_bytes=config.jobs.max_stream_bytes,
        max_stream_seconds=config.jobs.max_stream_seconds,
        scrubber=SecretScrubber(),  # the secrets register_secrets() took from the config
    )
    queue = JobQueue(
        app[REPOSITORY],
        gateway,
        workers=config.jobs.workers,
        max_pending=config.jobs.queue_size,
        max_pending_per_container=config.jobs.per_container_queue_size,
        observer=metrics,
    )
    metrics.watch_queue(queue.snapshot)
    guardian = Guardian([container_policy(container) for container in config.containers])
    desk = JobDesk(app[REPOSITORY], gateway, guardian, queue, max_chain_length=config.jobs.max_chain_length)
    app[DIRECTORY] = directory
    app[JOB_DESK] = desk
    app[QUEUE] = queue
    keeper = None
    repository = app[REPOSITORY]
    if isinstance(repository, ServerJobRepository):
        keeper = ClaimKeeper(
            repository,
            app[CLUSTER].heartbeat,
            queue,
            config.cluster.renew_seconds,
            frozenset(container.id for container in config.containers if container.retry_interrupted),
        )
        log.info("node %s: claims its jobs in the shared store", keeper.node_id)
        app[CLAIM_COUNTS] = keeper.counts
        await keeper.recover(RESTART_REASON)
        keeper.start()
    else:
        await desk.recover()
    queue.start()
    yield
    await queue.stop(config.jobs.shutdown_grace_seconds)
    if keeper is not None:
        await keeper.close()
    if manager is not None:
        await manager.close()  # leave, stop or remove the containers: docker.on_shutdown
    await calls.close()
    await session.close()


async def _cluster(app: web.Application) -> AsyncIterator[None]:
    """This node's heartbeat in the shared store, and the view of the others (/info, /metrics)."""
    config = app[CONFIG].cluster
    cluster = Cluster(
        SqlLeaseStore(app[ENGINE]),
        app[NODE_ID],  # the id its jobs are claimed under, when the store is shared (_store)
        config.lease_seconds,
        config.renew_seconds,
    )
    await cluster.beat()
    app[CLUSTER] = cluster
    app[METRICS].watch_cluster(lambda: len(cluster.view.nodes), lambda: _chain_role(app), lambda: _claims(app))
    log.info("node %s: %d node(s) alive on this store", cluster.node_id, len(cluster.view.nodes))
    cluster.start()
    yield
    await cluster.close()


def _claims(app: web.Application) -> dict[str, int] | None:
    counts = app.get(CLAIM_COUNTS)
    return counts.as_json() if counts is not None else None


def _chain_role(app: web.Application) -> str | None:
    role = app.get(CHAIN_ROLE)
    return str(role()) if callable(role) else None


async def _chain(app: web.Application) -> AsyncIterator[None]:
    """The chain module, when `chain.enabled`: subscriptions, delegated subscriptions, /info's chain fields."""
    config = app[CONFIG]
    if not config.chain.enabled:
        yield
        return
    from node.chain.runtime import ChainRuntime  # web3 is only imported by nodes that use it

    runtime = ChainRuntime(
        config.chain,
        config.containers,
        app[JOB_DESK],  # chain deliveries run as jobs of the same queue
        SqlChainRepository(app[ENGINE]),
        app[CLUSTER],
        metrics=app[METRICS].chain,
    )
    app[CHAIN_STATUS] = runtime.status
    app[CHAIN_ROLE] = lambda: runtime.role.value
    app[JOB_DESK].attach_delegated(runtime)
    runtime.start()
    yield
    await runtime.close()


async def _stop_taking_jobs(app: web.Application) -> None:
    """The listener is closed by now: start no more jobs, and let the grace period begin.

    Runs while aiohttp still drains in-flight requests; `_jobs`' cleanup then
    waits out what is left of the grace.
    """
    queue = app.get(QUEUE)
    if queue is not None:
        queue.close(app[CONFIG].jobs.shutdown_grace_seconds)
        log.info("no new connections; %s", shutdown_progress(app, 0.0))


def shutdown_progress(app: web.Application, elapsed: float) -> str:
    """What a stopping node still waits for, `elapsed` seconds after the signal."""
    queue = app.get(QUEUE)
    if queue is None:
        return "still starting up: no jobs to drain"
    config = app[CONFIG]
    # Admitted and not waiting for a worker: running, streaming, or being stored.
    running = queue.pending - queue.depth
    if running:
        left = max(0.0, config.jobs.shutdown_grace_seconds - elapsed)
        text = (
            f"waiting up to {left:.1f}s (jobs.shutdown_grace_seconds) for {_count(running, 'running job')} "
            "(streams included); any still running then are recorded as failed"
        )
    else:
        text = "no running jobs to wait for"
    if queue.depth:
        stay = "stays" if queue.depth == 1 else "stay"
        text += f"; {_count(queue.depth, 'queued job')} {stay} queued for the next start"
    if config.manage_containers and config.containers:
        done = {"leave": "left running", "stop": "stopped", "remove": "removed"}[config.docker.on_shutdown]
        text += f"; then the containers are {done} (docker.on_shutdown: {config.docker.on_shutdown})"
    return text


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def container_summary(app: web.Application) -> str:
    """For the "listening" line: which services are up, and why the others are not."""
    config = app[CONFIG]
    directory = app.get(DIRECTORY)
    if not config.containers or directory is None:
        return "no containers configured"
    up = [entry["id"] for entry in directory.running_info()]
    if not config.manage_containers:
        return f"{_count(len(up), 'container')} ({', '.join(up)}), not managed: reached at their url or port"
    text = f"{len(up)} of {len(config.containers)} containers up"
    if up:
        text += f" ({', '.join(up)})"
    down = directory.unavailable_info()
    if down:
        text += "; unavailable: " + ", ".join(f"{item['id']} ({item['reason'] or item['state']})" for item in down)
    return text


async def _pruner(app: web.Application) -> AsyncIterator[None]:
    retention = app[CONFIG].store.retention_seconds
    if retention is None:
        yield
        return
    interval = app[CONFIG].store.prune_interval_seconds

    async def prune_forever() -> None:
        while True:
            try:
                removed = await app[JOB_DESK].prune(time.time() - retention)
                if removed:
                    log.info("pruned %d finished jobs older than %gs", removed, retention)
            except Exception:
                log.exception("pruning failed; will retry")
            await asyncio.sleep(interval)

    task = asyncio.create_task(prune_forever(), name="pruner")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def _auth_settings(config: AuthConfig) -> AuthSettings:
    return AuthSettings(v1=Mode(config.v1), api=Mode(config.api), workspace_header=config.workspace_header)


def _auth_service(config: AuthConfig, repository: AuthStore) -> AuthService:
    gonka = config.gonka
    verifier = None
    if gonka.address is not None:
        verifier = SignatureVerifier(
            SignatureSettings(
                address=gonka.address,
                allowed=frozenset(gonka.allowed_addresses),
                max_age_seconds=gonka.max_age_seconds,
                max_ahead_seconds=gonka.max_ahead_seconds,
                allow_v0=gonka.allow_v0,
            )
        )
    limits = Limits(rpm=gonka.limits.rpm, tpm=gonka.limits.tpm, token_budget=gonka.limits.token_budget)
    return AuthService(repository, verifier, limits)


async def _auth_pruner(app: web.Application) -> AsyncIterator[None]:
    """Forget used signatures once stale (every node may run it)."""
    async with _every(app[CONFIG].auth.prune_interval_seconds, app[AUTH].prune, "auth-pruner", "used signatures"):
        yield


async def _rate_window_pruner(app: web.Application) -> AsyncIterator[None]:
    """Delete the rate limit's ended windows from a shared store, once a period (every node may run it)."""
    limits = app.get(RATE_LIMITS)
    if not isinstance(limits, ServerRateLimit):
        yield
        return
    async with _every(max(limits.period, 1.0), limits.prune, "rate-window-pruner", "the rate limit's windows"):
        yield


@contextlib.asynccontextmanager
async def _every(interval: float, prune: Callable[[], Awaitable[object]], name: str, what: str) -> AsyncIterator[None]:
    """Run `prune` every `interval` seconds in a task while the context lasts; a failure is retried."""

    async def prune_forever() -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await prune()
            except Exception:
                log.exception("pruning %s failed; will retry", what)

    task = asyncio.create_task(prune_forever(), name=name)
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
