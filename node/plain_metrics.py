"""Counters and histograms kept as plain numbers and exported when /metrics is scraped.

prometheus-client's Counter and Histogram take a lock on every increment and walk the
buckets in Python on every observation (several µs each, a dozen times per /v1 call).
These count with a dict lookup and an addition; they are touched only on the event
loop's thread (which is why they need no lock), and give the same series a scrape of
prometheus-client's own would (`<name>_total`; `_bucket`, `_count`, `_sum`), less the
`_created` timestamps.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class PlainCounter(Collector):
    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        self._name = name
        self._documentation = documentation
        self._labels = list(labels)
        self._counts: dict[tuple[str, ...], float] = {}

    def inc(self, labels: tuple[str, ...], amount: float = 1) -> None:
        self._counts[labels] = self._counts.get(labels, 0) + amount

    def value(self, labels: tuple[str, ...]) -> float:
        return self._counts.get(labels, 0)

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(self._name, self._documentation, labels=self._labels)
        for labels, count in sorted(self._counts.items()):
            family.add_metric(list(labels), count)
        yield family

    def describe(self) -> Iterator[Metric]:
        return iter(())


class PlainHistogram(Collector):
    def __init__(self, name: str, documentation: str, labels: Sequence[str], buckets: Sequence[float]) -> None:
        self._name = name
        self._documentation = documentation
        self._labels = list(labels)
        self._bounds = tuple(buckets)
        self._le = [floatToGoString(bound) for bound in self._bounds] + ["+Inf"]
        # labels -> observations per bucket (the last is +Inf), then their sum
        self._series: dict[tuple[str, ...], list[float]] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        counts = self._series.get(labels)
        if counts is None:
            counts = self._series[labels] = [0] * (len(self._bounds) + 1) + [0.0]
        counts[bisect_left(self._bounds, value)] += 1  # le is inclusive: the first bound >= value
        counts[-1] += value

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self._name, self._documentation, labels=self._labels)
        for labels, counts in sorted(self._series.items()):
            cumulative, buckets = 0, []
            for le, observed in zip(self._le, counts[:-1], strict=True):
                cumulative += int(observed)
                buckets.append((le, cumulative))
            family.add_metric(list(labels), buckets, counts[-1])
        yield family

    def describe(self) -> Iterator[Metric]:
        return iter(())
