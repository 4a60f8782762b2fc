"""The plain counters and histograms scrape as prometheus-client's own would (less `_created`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from node.plain_metrics import PlainCounter, PlainHistogram

BUCKETS = (0.005, 0.01, 0.5, 2.0)
OBSERVED = [0.001, 0.005, 0.0051, 0.3, 0.5, 2.0, 7.5, 0.005]


def _scrape(registry: CollectorRegistry) -> list[str]:
    """The exposition's lines, in order (series sorted: ours are, prometheus-client's are as first seen)."""
    lines = [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]
    return [line for line in lines if line.startswith("#")] + sorted(line for line in lines if not line.startswith("#"))


def test_a_counter_scrapes_as_prometheus_clients_own() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Counter("calls", "Calls by model and outcome", ["model", "outcome"], registry=theirs)
    plain = PlainCounter("calls", "Calls by model and outcome", ["model", "outcome"])
    ours.register(plain)
    for model, outcome, amount in [("a", "ok", 1), ("b", "ok", 3), ("a", "failed", 1), ("a", "ok", 2.5)]:
        reference.labels(model, outcome).inc(amount)
        plain.inc((model, outcome), amount)
    assert _scrape(ours) == _scrape(theirs)
    assert plain.value(("a", "ok")) == 3.5
    assert plain.value(("c", "ok")) == 0


def test_a_histogram_scrapes_as_prometheus_clients_own_bounds_inclusive() -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("latency_seconds", "Latency", ["route"], buckets=BUCKETS, registry=theirs)
    plain = PlainHistogram("latency_seconds", "Latency", ["route"], BUCKETS)
    ours.register(plain)
    for index, value in enumerate(OBSERVED):  # values on a bound count in that bucket (le)
        route = "/v1" if index % 3 else "/api"
        reference.labels(route).observe(value)
        plain.observe((route,), value)
    assert _scrape(ours) == _scrape(theirs)


def test_an_unused_family_scrapes_no_series() -> None:
    registry = CollectorRegistry()
    registry.register(PlainCounter("calls", "Calls", ["model"]))
    registry.register(PlainHistogram("latency_seconds", "Latency", ["route"], BUCKETS))
    assert [line for line in _scrape(registry) if not line.startswith("#")] == []
