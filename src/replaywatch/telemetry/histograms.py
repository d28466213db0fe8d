"""Histograms recorded a batch of values per call, exported through the SDK's readers.

The OpenTelemetry SDK takes one value per ``Histogram.record`` call, and each call costs
2.75 µs (a ``Measurement``, the current context, two locks, an attributes key:
``bench/README.md``). The end-to-end latency is one value per comparison, so on the
hot path that was 1.8 µs of the consumer's 88 µs per event, the largest part of what
telemetry cost. A ``BatchHistogram`` takes a batch's values in one call (0.12 µs per
value) and aggregates them as the SDK's explicit-bucket histogram does: the same bucket
counts, count, sum, min and max (``tests/unit/test_histograms.py`` holds it to the SDK).

Its data point reaches the exporters through the readers: a reader class made by
``with_batch_histograms`` adds every batch histogram to what it collects, in the
``replaywatch`` scope, so ``/metrics``, OTLP and the console show it like any other
metric. The points are cumulative, as every reader ``telemetry.setup()`` installs is.
Until such a reader exists, recording does nothing (as the API's no-op instruments do
when no SDK is installed). A collection in which the SDK's own instruments have nothing
yet reaches no reader (the SDK calls none), so it shows no batch histogram either; in
``replaywatch run`` the records counter is recorded with the latency, in the same call.
Without attributes and without exemplars: the histograms that need either stay SDK
instruments.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import replace
from time import time_ns
from typing import Any, TypeVar

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricReader,
    MetricsData,
    ScopeMetrics,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

SCOPE = "replaywatch"

_REGISTERED: list[BatchHistogram] = []
_read = threading.Event()
"""Set once a reader that exports batch histograms is made: until then they record nothing."""


class BatchHistogram:
    """A cumulative explicit-bucket histogram without attributes, fed a batch at a time."""

    def __init__(
        self, name: str, *, unit: str, description: str, boundaries: Sequence[float], register: bool = True
    ) -> None:
        """``register``: exported by the readers of ``with_batch_histograms`` (a test's
        own histogram is not)."""
        self.name, self.unit, self.description = name, unit, description
        self._bounds = tuple(boundaries)
        self._lock = threading.Lock()
        self._start = time_ns()
        self._counts = [0] * (len(self._bounds) + 1)
        self._count = 0
        self._sum = 0.0
        self._min = math.inf
        self._max = -math.inf
        self._always = not register
        if register:
            _REGISTERED.append(self)

    def record(self, value: float) -> None:
        self.record_many((value,))

    def record_many(self, values: Iterable[float]) -> None:
        """Add each value; a negative or non-finite one is left out, as the SDK leaves it."""
        if not (self._always or _read.is_set()):
            return
        vs = values if isinstance(values, list) else list(values)
        if not vs:
            return
        lo, hi, total = min(vs), max(vs), sum(vs)
        if lo < 0 or not math.isfinite(total):
            vs = [v for v in vs if v >= 0 and math.isfinite(v)]
            if not vs:
                return
            lo, hi, total = min(vs), max(vs), sum(vs)
        bounds = self._bounds
        with self._lock:
            counts = self._counts
            for v in vs:
                counts[bisect_left(bounds, v)] += 1
            self._count += len(vs)
            self._sum += total
            self._min = min(self._min, lo)
            self._max = max(self._max, hi)

    def metric(self) -> Metric | None:
        """The cumulative data point since the start, or None before the first value."""
        with self._lock:
            if not self._count:
                return None
            point = HistogramDataPoint(
                attributes={}, start_time_unix_nano=self._start, time_unix_nano=time_ns(), count=self._count,
                sum=self._sum, bucket_counts=tuple(self._counts), explicit_bounds=self._bounds, min=self._min,
                max=self._max, exemplars=[],
            )  # fmt: skip
        return Metric(
            name=self.name, description=self.description, unit=self.unit,
            data=Histogram(data_points=[point], aggregation_temporality=AggregationTemporality.CUMULATIVE),
        )  # fmt: skip


def add_batch_histograms(data: MetricsData) -> MetricsData:
    """``data`` with each batch histogram that has a value, in each resource's
    ``replaywatch`` scope (made if the SDK's instruments had nothing to report)."""
    extra = [m for m in (h.metric() for h in _REGISTERED) if m is not None]
    if not extra:
        return data
    resources = []
    for rm in data.resource_metrics:
        scopes = list(rm.scope_metrics)
        at = next((i for i, sm in enumerate(scopes) if sm.scope.name == SCOPE), None)
        if at is None:
            scopes.append(ScopeMetrics(scope=InstrumentationScope(SCOPE), metrics=extra, schema_url=""))
        else:
            scopes[at] = replace(scopes[at], metrics=[*scopes[at].metrics, *extra])
        resources.append(replace(rm, scope_metrics=scopes))
    return MetricsData(resource_metrics=resources)


R = TypeVar("R", bound=MetricReader)


def with_batch_histograms(reader_class: type[R]) -> type[R]:
    """A subclass of ``reader_class`` whose collections include the batch histograms."""

    class Reader(reader_class):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            _read.set()

        def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> None:
            super()._receive_metrics(add_batch_histograms(metrics_data), timeout_millis, **kwargs)

    Reader.__name__ = Reader.__qualname__ = f"{reader_class.__name__}WithBatchHistograms"
    return Reader
