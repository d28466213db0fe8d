"""OpenTelemetry instruments. The API is always used; an SDK provider with an exporter
is set up by ``setup()`` only when asked (``REPLAYWATCH_OTEL_CONSOLE=1`` prints metrics
and spans to stdout), so a library user keeps control of their own provider."""

from __future__ import annotations

import os
from collections import Counter

from opentelemetry import metrics, trace

meter = metrics.get_meter("replaywatch")
tracer = trace.get_tracer("replaywatch")

RECORDS = meter.create_counter("replaywatch.records", description="Input records processed")
DEAD_LETTERS = meter.create_counter("replaywatch.dead_letters", description="Records sent to the dead-letter topic")
COMPARISONS = meter.create_counter("replaywatch.comparisons", description="Comparisons made, by verdict")
RETRIES = meter.create_counter(
    "replaywatch.batch_retries", description="Batch attempts retried after a transient error"
)
BATCH_SECONDS = meter.create_histogram("replaywatch.batch.duration", unit="s", description="Time to process a batch")


def record_batch(records: int, bad: int, verdicts: list[str], seconds: float) -> None:
    RECORDS.add(records)
    if bad:
        DEAD_LETTERS.add(bad)
    for verdict, n in Counter(verdicts).items():
        COMPARISONS.add(n, {"verdict": verdict})
    BATCH_SECONDS.record(seconds)


def setup() -> None:
    if os.environ.get("REPLAYWATCH_OTEL_CONSOLE") != "1":
        return
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    reader = PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=10_000)
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
