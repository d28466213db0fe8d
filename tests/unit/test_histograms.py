"""A batch histogram aggregates as the OpenTelemetry SDK's explicit-bucket histogram does
(the SDK is the oracle), and the readers of ``with_batch_histograms`` export it."""

from __future__ import annotations

import math
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from replaywatch import telemetry
from replaywatch.telemetry.histograms import BatchHistogram, with_batch_histograms

BOUNDS = telemetry.SECONDS

values = st.one_of(
    st.floats(min_value=0, max_value=400, allow_nan=False),
    st.sampled_from([*BOUNDS, 0.0, -0.5, math.inf, math.nan]),  # on a boundary; left out by both
)


def sdk_point(batches: list[list[float]]) -> Any:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    h = provider.get_meter("oracle").create_histogram("h", unit="s", explicit_bucket_boundaries_advisory=BOUNDS)
    for batch in batches:
        for v in batch:
            h.record(v)
    data = reader.get_metrics_data()
    points = [p for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
              for p in m.data.data_points] if data else []  # fmt: skip
    provider.shutdown()
    return points[0] if points else None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(values, max_size=40), max_size=6))
def test_the_same_point_as_the_sdks_histogram(batches: list[list[float]]) -> None:
    mine = BatchHistogram("h", unit="s", description="", boundaries=BOUNDS, register=False)
    for batch in batches:
        mine.record_many(batch)
    metric = mine.metric()
    expected = sdk_point(batches)
    if expected is None:
        assert metric is None
        return
    assert metric is not None
    (got,) = cast(Any, metric.data.data_points)
    assert list(got.bucket_counts) == list(expected.bucket_counts)
    assert list(got.explicit_bounds) == list(expected.explicit_bounds)
    assert (got.count, got.min, got.max) == (expected.count, expected.min, expected.max)
    assert math.isclose(got.sum, expected.sum, rel_tol=1e-9, abs_tol=1e-9)  # the order of the additions differs


def test_a_reader_of_batch_histograms_exports_the_registered_ones_in_the_replaywatch_scope() -> None:
    reader = with_batch_histograms(InMemoryMetricReader)()
    provider = MeterProvider(metric_readers=[reader])
    provider.get_meter("replaywatch").create_counter("c").add(1)
    before: Any = telemetry.LATENCY.metric()
    telemetry.LATENCY.record_many([0.003, 0.2, 7.0])
    data = reader.get_metrics_data()
    assert data is not None
    scopes = {sm.scope.name: [m.name for m in sm.metrics] for rm in data.resource_metrics for sm in rm.scope_metrics}
    assert "replaywatch.latency" in scopes["replaywatch"] and "c" in scopes["replaywatch"]
    (latency,) = [m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
                  if m.name == "replaywatch.latency"]  # fmt: skip
    (point,) = cast(Any, latency.data.data_points)
    assert point.count == (before.data.data_points[0].count if before else 0) + 3
    provider.shutdown()


def test_nothing_is_exported_before_a_value_is_recorded() -> None:
    h = BatchHistogram("empty", unit="s", description="", boundaries=BOUNDS, register=False)
    h.record_many([])
    h.record_many([-1.0, math.nan, math.inf])
    assert h.metric() is None
    h.record(0.0)
    point = h.metric()
    assert point is not None and cast(Any, point.data.data_points[0]).bucket_counts[0] == 1


def test_a_label_from_records_is_bounded_in_width_and_in_values() -> None:
    from replaywatch.telemetry import BoundedLabel

    label = BoundedLabel(most=3, width=8)
    assert [label(v) for v in ("openai", "anthropic-claude", None, "gemini", "bedrock", "openai")] == [
        "openai", "anthropi", "unknown", "gemini", "other", "openai",
    ]  # fmt: skip
    assert {label(f"p{i}") for i in range(10_000)} == {"other"}  # nothing new past the bound
