"""Prometheus metrics: with plain_metrics.py, the only module that imports prometheus-client.

The domain never sees these objects. `app.py` hands the job queue and the
service gateway plain observer methods (`NodeMetrics.admitted`,
`NodeMetrics.container_call`, ...), and points the in-flight gauges at a
snapshot function that is called only when /metrics is scraped, so counting
costs nothing on the hot path.

Each application gets its own registry: several nodes in one process (tests)
never clash, and /metrics shows exactly one node.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from node.plain_metrics import PlainCounter, PlainHistogram

NAMESPACE = "infernet"

# HTTP handlers answer in microseconds to seconds; streams can take minutes.
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0)
# A container call is an inference: milliseconds (echo) to minutes (LLM).
CONTAINER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

# Model calls: time to first token (ms to a minute) and generation speed (tokens per second).
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SPEED_BUCKETS = (1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 10000.0)

# Methods outside this set are folded into "other": a method is client input,
# and every distinct label value is a new time series held forever.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class QueueSnapshot(Protocol):
    """What the job queue holds right now (node.jobs.queue.QueueState has this shape)."""

    @property
    def depth(self) -> int: ...  # waiting for a worker

    @property
    def pending(self) -> int: ...  # admitted and not finished

    @property
    def capacity(self) -> int: ...  # the global bound

    @property
    def by_container(self) -> Mapping[str, tuple[int, int]]: ...  # container -> (queued, running)


class _ClusterCollector(Collector):
    """Nodes alive and this node's roles, from the cluster's last heartbeat and the chain's leader;
    the jobs this node took over from dead nodes, by outcome (a shared store only)."""

    def __init__(
        self,
        nodes_alive: Callable[[], int],
        chain_role: Callable[[], str | None],
        claims: Callable[[], Mapping[str, int] | None],
    ) -> None:
        self._nodes_alive = nodes_alive
        self._chain_role = chain_role
        self._claims = claims

    def collect(self) -> Iterator[Metric]:
        alive = GaugeMetricFamily(f"{NAMESPACE}_cluster_nodes_alive", "Nodes whose heartbeat lease is live")
        alive.add_metric([], self._nodes_alive())
        yield alive
        role = self._chain_role()
        if role is not None:
            leader = GaugeMetricFamily(
                f"{NAMESPACE}_chain_leader", "1 when this node sends its wallet's transactions, 0 on a standby"
            )
            leader.add_metric([], 1 if role == "leader" else 0)
            yield leader
        claims = self._claims()
        if claims is not None:
            claimed = CounterMetricFamily(
                f"{NAMESPACE}_cluster_jobs_claimed",
                "Jobs this node took over from dead nodes: queued (run here), rerun (interrupted, safe to retry), "
                "failed (interrupted, recorded as failed)",
                labels=["outcome"],
            )
            for outcome, count in claims.items():
                claimed.add_metric([outcome], count)
            yield claimed

    def describe(self) -> Iterator[Metric]:
        return iter(())  # dynamic: the claims family appears only once the job claims run


class _QueueCollector(Collector):
    """Reads the queue at scrape time, so gauges can never drift from the truth."""

    def __init__(self, snapshot: Callable[[], QueueSnapshot]) -> None:
        self._snapshot = snapshot
        # Containers once seen keep reporting (as 0): a series that vanishes when
        # the queue empties makes graphs and alerts lie.
        self._seen: set[str] = set()

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        depth = GaugeMetricFamily(f"{NAMESPACE}_queue_depth", "Jobs waiting for a worker")
        depth.add_metric([], snap.depth)
        pending = GaugeMetricFamily(
            f"{NAMESPACE}_queue_pending", "Jobs admitted and not finished (queued, running or streaming)"
        )
        pending.add_metric([], snap.pending)
        capacity = GaugeMetricFamily(
            f"{NAMESPACE}_queue_capacity", "The global bound on pending jobs (jobs.queue_size)"
        )
        capacity.add_metric([], snap.capacity)
        in_flight = GaugeMetricFamily(
            f"{NAMESPACE}_jobs_in_flight", "Unfinished jobs by state and first container", labels=["state", "container"]
        )
        self._seen.update(snap.by_container)
        for container in sorted(self._seen):
            queued, running = snap.by_container.get(container, (0, 0))
            in_flight.add_metric(["queued", container], queued)
            in_flight.add_metric(["running", container], running)
        yield from (depth, pending, capacity, in_flight)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # dynamic: don't call collect() at registration time


class _ConnectionCollector(Collector):
    """Client connections, read at scrape time from the HTTP server's counts."""

    def __init__(self, snapshot: Callable[[], tuple[int, Mapping[str, int]]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        open_now, closed = self._snapshot()
        yield GaugeMetricFamily(f"{NAMESPACE}_http_connections_open", "Open client connections", value=open_now)
        family = CounterMetricFamily(
            f"{NAMESPACE}_http_connections_closed",
            "Client connections the node closed to keep its bounds, by reason",
            labels=["reason"],
        )
        for reason, count in closed.items():
            family.add_metric([reason], count)
        yield family

    def describe(self) -> Iterator[Metric]:
        return iter(())


class ChainMetrics:
    """The hook for the chain module: call these; nothing is exported until it does.

    Created on first use (`NodeMetrics.chain`), so a node with the chain off shows
    no chain series at all rather than misleading zeros.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._head = Gauge(f"{NAMESPACE}_chain_head_block", "Latest block seen on the chain", registry=registry)
        self._synced = Gauge(
            f"{NAMESPACE}_chain_synced_block",
            "Last block whose subscriptions the node has processed",
            registry=registry,
        )
        self._deliveries = Counter(
            f"{NAMESPACE}_chain_deliveries",
            "Transactions delivering outputs, by outcome",
            ["outcome"],
            registry=registry,
        )

    def head(self, block: int) -> None:
        self._head.set(block)

    def synced(self, block: int) -> None:
        self._synced.set(block)

    def delivered(self, outcome: str) -> None:
        """outcome: e.g. "success", "reverted", "failed" (keep the set small)."""
        self._deliveries.labels(outcome).inc()


class NodeMetrics:
    def __init__(self, process_metrics: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        if process_metrics:
            # Memory, CPU, open files: what an operator looks at first when the node misbehaves.
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)

        # The per-request families count in plain numbers (plain_metrics.py): prometheus-client's
        # own took a lock per increment, a dozen times per /v1 call.
        def counter(name: str, documentation: str, *labels: str) -> PlainCounter:
            family = PlainCounter(f"{NAMESPACE}_{name}", documentation, labels)
            r.register(family)
            return family

        def histogram(name: str, documentation: str, buckets: tuple[float, ...], *labels: str) -> PlainHistogram:
            family = PlainHistogram(f"{NAMESPACE}_{name}", documentation, labels, buckets)
            r.register(family)
            return family

        self._http_requests = counter(
            "http_requests", "HTTP requests by route template, method and status", "route", "method", "status"
        )
        self._http_latency = histogram(
            "http_request_duration_seconds",
            "Time to answer an HTTP request (streams: until the end)",
            HTTP_BUCKETS,
            "route",
            "method",
        )
        self._admitted = counter(
            "jobs_admitted", "Jobs admitted into the queue bounds and stored, by first container", "container"
        )
        self._rejected = counter(
            "jobs_rejected", "Jobs refused with 429 because a bound was reached", "container", "bound"
        )
        self._finished = counter(
            "jobs_finished", "Jobs that reached a final state, by first container", "container", "status"
        )
        self._container_calls = histogram(
            "container_call_duration_seconds",
            "Calls to inference containers, by outcome",
            CONTAINER_BUCKETS,
            "container",
            "kind",
            "outcome",
        )
        self._auth_refusals = counter(
            "auth_refusals",
            "Calls refused by authentication or quotas, by surface (v1, api) and reason",
            "surface",
            "reason",
        )
        # Per model (/v1). The label is a configured model name, never client input:
        # an unknown model is answered 404 before anything is counted.
        self._model_requests = counter(
            "model_requests",
            "Calls to a model (/v1), by model, kind (complete, stream) and outcome",
            "model",
            "kind",
            "outcome",
        )
        self._model_prompt_tokens = counter(
            "model_prompt_tokens", "Tokens in: prompt tokens of finished model calls", "model"
        )
        self._model_completion_tokens = counter(
            "model_completion_tokens", "Tokens out: completion tokens of finished model calls", "model"
        )
        self._model_ttft = histogram(
            "model_time_to_first_token_seconds",
            "Streamed model calls: from the request to the first content relayed",
            TTFT_BUCKETS,
            "model",
        )
        self._model_speed = histogram(
            "model_tokens_per_second",
            "Completion tokens per second of generation (streams: after the first token)",
            SPEED_BUCKETS,
            "model",
        )
        self._chain: ChainMetrics | None = None

    # -- wiring ---------------------------------------------------------------

    def watch_queue(self, snapshot: Callable[[], QueueSnapshot]) -> None:
        self.registry.register(_QueueCollector(snapshot))

    def watch_cluster(
        self,
        nodes_alive: Callable[[], int],
        chain_role: Callable[[], str | None],
        claims: Callable[[], Mapping[str, int] | None] = lambda: None,
    ) -> None:
        self.registry.register(_ClusterCollector(nodes_alive, chain_role, claims))

    def watch_connections(self, snapshot: Callable[[], tuple[int, Mapping[str, int]]]) -> None:
        self.registry.register(_ConnectionCollector(snapshot))

    @property
    def chain(self) -> ChainMetrics:
        if self._chain is None:
            self._chain = ChainMetrics(self.registry)
        return self._chain

    # -- HTTP -----------------------------------------------------------------

    def http_request(self, route: str, method: str, status: int, seconds: float) -> None:
        method = method if method in _METHODS else "other"  # client input: keep the key set closed
        self._http_requests.inc((route, method, str(status)))
        self._http_latency.observe((route, method), seconds)

    # -- the job queue's observer (node.jobs.queue.QueueObserver) ---------------

    def admitted(self, container: str) -> None:
        self._admitted.inc((container,))

    def rejected(self, container: str, bound: str) -> None:
        self._rejected.inc((container, bound))

    def finished(self, container: str, status: str) -> None:
        self._finished.inc((container, status))

    # -- the service gateway's observer -----------------------------------------

    def container_call(self, container: str, kind: str, outcome: str, seconds: float) -> None:
        self._container_calls.observe((container, kind, outcome), seconds)

    # -- auth (node/api/auth.py) ----------------------------------------------

    def auth_refused(self, surface: str, reason: str) -> None:
        """reason: one of node.auth.errors.Reason (a closed set)."""
        self._auth_refusals.inc((surface, reason))

    # -- model calls (/v1) --------------------------------------------------------

    def model_call(
        self,
        model: str,
        kind: str,
        outcome: str,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        first_token_seconds: float | None = None,
        tokens_per_second: float | None = None,
    ) -> None:
        """One finished model call. outcome: "success", or the error kind (a small closed set)."""
        self._model_requests.inc((model, kind, outcome))
        if prompt_tokens:
            self._model_prompt_tokens.inc((model,), prompt_tokens)
        if completion_tokens:
            self._model_completion_tokens.inc((model,), completion_tokens)
        if first_token_seconds is not None:
            self._model_ttft.observe((model,), first_token_seconds)
        if tokens_per_second is not None:
            self._model_speed.observe((model,), tokens_per_second)

    # -- exposition -------------------------------------------------------------

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition body and its content type, negotiated from the Accept header."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
