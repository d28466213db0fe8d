"""OpenTelemetry: the instruments, the spans' helpers, and the providers of the process.

Instruments and spans come from the API, so a library user (and the tests) may install
their own providers. ``setup()`` installs the SDK's for ``replaywatch run``:

- metrics: read by ``/metrics`` (Prometheus format, ``http.py``), and exported by OTLP
  when an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
  ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``; protocol http/protobuf);
- traces: exported by OTLP when an endpoint is set (``..._TRACES_ENDPOINT``);
- ``REPLAYWATCH_OTEL_CONSOLE=1`` prints both to stdout; ``OTEL_SDK_DISABLED=true``
  leaves the API's no-op providers (telemetry off).

Traces follow the messaging conventions for Kafka: a span per batch for each stage
(``prepare``, ``write``), linked to each input record's producer span (W3C
``traceparent`` in the record's headers); a span per comparison that drifted or
diverged, a child of the record's producer span, whose context goes on the output
event's headers so that an alert leads back to the agent run's trace.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

logger = logging.getLogger(__name__)

meter = metrics.get_meter("replaywatch")
tracer = trace.get_tracer("replaywatch")

SECONDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0]

RECORDS = meter.create_counter("replaywatch.records", unit="{record}", description="Input records consumed")
COMPARISONS = meter.create_counter(
    "replaywatch.comparisons", unit="{comparison}", description="Comparisons made, by verdict and provider"
)
DEAD_LETTERS = meter.create_counter(
    "replaywatch.dead_letters", unit="{record}", description="Records sent to the dead-letter topic, by reason"
)
PUBLISHED = meter.create_counter(
    "replaywatch.events.published", unit="{event}", description="Comparison events published to the output topic"
)
RETRIES = meter.create_counter(
    "replaywatch.retries", unit="{retry}", description="Retries of a transient error, by cause"
)
BATCH_SIZE = meter.create_histogram(
    "replaywatch.batch.size", unit="{record}", description="Records per batch",
    explicit_bucket_boundaries_advisory=[1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000],
)  # fmt: skip
STAGE_SECONDS = meter.create_histogram(
    "replaywatch.stage.duration", unit="s", description="Duration of a stage of a batch: prepare, write, publish",
    explicit_bucket_boundaries_advisory=SECONDS,
)  # fmt: skip
LATENCY = meter.create_histogram(
    "replaywatch.latency", unit="s", description="End to end: detected_at - occurred_at of each comparison",
    explicit_bucket_boundaries_advisory=SECONDS,
)  # fmt: skip
S3_PUT_SECONDS = meter.create_histogram(
    "replaywatch.s3.put.duration", unit="s", description="Duration of one diff upload to S3",
    explicit_bucket_boundaries_advisory=SECONDS,
)  # fmt: skip

_lag: list[Callable[[], dict[int, int]]] = []
_backlog: list[Callable[[], int | None]] = []


def _observe_lag(options: CallbackOptions) -> Iterable[Observation]:
    for source in _lag:
        for partition, lag in source().items():
            yield Observation(lag, {"partition": str(partition)})


def _observe_backlog(options: CallbackOptions) -> Iterable[Observation]:
    for source in _backlog:
        if (value := source()) is not None:
            yield Observation(value)


meter.create_observable_gauge(
    "replaywatch.consumer.lag", [_observe_lag], unit="{record}",
    description="Records behind the partition's high-water mark, per owned partition",
)  # fmt: skip
meter.create_observable_gauge(
    "replaywatch.outbox.backlog", [_observe_backlog], unit="{event}",
    description="Events committed to the outbox and not yet published",
)  # fmt: skip


def watch(lag: Callable[[], dict[int, int]], backlog: Callable[[], int | None]) -> Callable[[], None]:
    """Report this pipeline's lag and backlog in the gauges; returns the undo."""
    _lag.append(lag)
    _backlog.append(backlog)

    def undo() -> None:
        _lag.remove(lag)
        _backlog.remove(backlog)

    return undo


def record_batch(records: int, verdicts: Sequence[tuple[str, str | None]], latencies_s: Iterable[float]) -> None:
    """A batch committed: its records, its comparisons by (verdict, provider), latencies."""
    RECORDS.add(records)
    BATCH_SIZE.record(records)
    for (verdict, provider), n in Counter(verdicts).items():
        COMPARISONS.add(n, {"verdict": verdict, "provider": provider or "unknown"})
    for seconds in latencies_s:
        LATENCY.record(max(seconds, 0.0))


def record_dead_letters(reasons: Iterable[str]) -> None:
    for reason, n in Counter(reasons).items():
        DEAD_LETTERS.add(n, {"reason": reason})


# --- traces -----------------------------------------------------------------------

_propagator = TraceContextTextMapPropagator()
TRACEPARENT = "traceparent"


def _header_getter(headers: Sequence[tuple[str, bytes]]) -> dict[str, str]:
    return {k: v.decode("latin-1") for k, v in headers if k in ("traceparent", "tracestate")}


def producer_context(record: Any) -> otel_context.Context | None:
    """The producer's trace context from a record's headers (None when it has none)."""
    headers = record.headers
    if not headers:
        return None
    found = _header_getter(headers)
    if TRACEPARENT not in found:
        return None
    ctx = _propagator.extract(found)
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def record_links(records: Iterable[Any]) -> list[Link]:
    """A span link per input record that carries its producer's trace context."""
    links = []
    for r in records:
        ctx = producer_context(r)
        if ctx is not None:
            links.append(Link(trace.get_current_span(ctx).get_span_context(), {
                "messaging.destination.partition.id": str(r.partition), "messaging.kafka.offset": r.offset,
            }))  # fmt: skip
    return links


def batch_attributes(topic: str, group: str, records: Sequence[Any]) -> dict[str, Any]:
    """The messaging attributes of a span over a batch of ``records``."""
    attrs: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": topic,
        "messaging.consumer.group.name": group,
        "messaging.batch.message_count": len(records),
    }
    partitions = {r.partition for r in records}
    if len(partitions) == 1:
        attrs["messaging.destination.partition.id"] = str(next(iter(partitions)))
    return attrs


def batch_span(stage: str, topic: str, group: str, records: Sequence[Any]) -> Any:
    """The span of one stage over one batch (a context manager)."""
    return tracer.start_as_current_span(
        f"{stage} {topic}", kind=SpanKind.CONSUMER if stage == "prepare" else SpanKind.INTERNAL,
        attributes=batch_attributes(topic, group, records), links=record_links(records) if stage == "prepare" else None,
    )  # fmt: skip


def comparison_trace(record: Any, attributes: dict[str, Any], drifted: bool) -> str | None:
    """The trace context for a comparison's output event: for a drift or divergence, a
    span of its own, a child of the record's producer span (or of the current batch
    span); otherwise the producer's context as it came. The ``traceparent`` value."""
    parent = producer_context(record)
    if drifted and tracer_is_recording():
        links = [Link(trace.get_current_span().get_span_context())] if parent is not None else None
        span = tracer.start_span("compare", context=parent, kind=SpanKind.INTERNAL, attributes=attributes, links=links)
        span.end()
        carrier: dict[str, str] = {}
        _propagator.inject(carrier, trace.set_span_in_context(span))
        return carrier.get(TRACEPARENT)
    if parent is None:
        return None
    return _header_getter(record.headers).get(TRACEPARENT)


def tracer_is_recording() -> bool:
    return trace.get_current_span().is_recording()


# --- providers ----------------------------------------------------------------------

_prometheus: Any = None


def setup(*, service_name: str = "replaywatch", max_links: int = 1000) -> bool:
    """Install the SDK's providers for this process; False when telemetry is off."""
    global _prometheus
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    _prometheus = PrometheusMetricReader()
    readers: list[MetricReader] = [_prometheus]
    spans = TracerProvider(resource=resource, span_limits=SpanLimits(max_links=max_links))
    if _otlp("METRICS"):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    if _otlp("TRACES"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        spans.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if os.environ.get("REPLAYWATCH_OTEL_CONSOLE") == "1":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=10_000))
        spans.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers))
    trace.set_tracer_provider(spans)
    _instrument_asyncpg()
    return True


def _otlp(signal: str) -> bool:
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
    )


def _instrument_asyncpg() -> None:
    """A span per PostgreSQL query, under the batch's write span (contrib instrumentation)."""
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    AsyncPGInstrumentor().instrument()  # type: ignore[no-untyped-call]


def shutdown() -> None:
    """Flush what the exporters hold (at exit)."""
    for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
        stop = getattr(provider, "shutdown", None)
        if stop is not None:
            try:
                stop()
            except Exception as exc:  # an exporter that cannot reach its endpoint at exit
                logger.warning("telemetry: could not flush at exit: %s", exc)
