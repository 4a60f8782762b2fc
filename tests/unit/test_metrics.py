"""The HTTP request metrics, counted by hand and exported in Prometheus' format."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from node.metrics import HTTP_BUCKETS, NodeMetrics


def samples(metrics: NodeMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, _ = metrics.render(None)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def test_requests_and_durations_are_exported_as_prometheus_counts() -> None:
    metrics = NodeMetrics(process_metrics=False)
    for seconds in (0.0004, HTTP_BUCKETS[0], 0.003, 1_000.0):  # a bound itself counts in its bucket
        metrics.http_request("/api/jobs", "GET", 200, seconds)
    metrics.http_request("/api/jobs", "BREW", 405, 0.2)  # unknown methods fold into "other"
    got = samples(metrics)
    get = (("method", "GET"), ("route", "/api/jobs"))
    assert got[("infernet_http_requests_total", (*get[:1], *get[1:], ("status", "200")))] == 4
    assert got[("infernet_http_requests_total", (("method", "other"), ("route", "/api/jobs"), ("status", "405")))] == 1

    def bucket(le: str) -> float:
        return got[("infernet_http_request_duration_seconds_bucket", (("le", le), *get))]

    assert bucket("0.001") == 2 and bucket("0.005") == 3 and bucket("180.0") == 3 and bucket("+Inf") == 4
    assert got[("infernet_http_request_duration_seconds_count", get)] == 4
    assert abs(got[("infernet_http_request_duration_seconds_sum", get)] - 1000.0044) < 1e-9
