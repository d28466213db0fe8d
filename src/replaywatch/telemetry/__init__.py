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
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState

from replaywatch.telemetry.histograms import BatchHistogram, with_batch_histograms

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
IGNORE_RULE_COMPARISONS = meter.create_counter(
    "replaywatch.ignore_rule.comparisons", unit="{comparison}",
    description="Comparisons made under an ignore rule's policy, by policy and rule",
)  # fmt: skip
IGNORE_RULE_MATCHES = meter.create_counter(
    "replaywatch.ignore_rule.matches", unit="{comparison}",
    description="Comparisons in which an ignore rule left something out, by policy and rule",
)  # fmt: skip
BATCH_SIZE = meter.create_histogram(
    "replaywatch.batch.size", unit="{record}", description="Records per batch",
    explicit_bucket_boundaries_advisory=[1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000],
)  # fmt: skip
STAGE_SECONDS = meter.create_histogram(
    "replaywatch.stage.duration", unit="s", description="Duration of a stage of a batch: prepare, write, publish",
    explicit_bucket_boundaries_advisory=SECONDS,
)  # fmt: skip
# one value per comparison (a batch per call) and per diff: without the SDK's cost per call (histograms.py)
LATENCY = BatchHistogram(
    "replaywatch.latency", unit="s", description="End to end: detected_at - occurred_at of each comparison",
    boundaries=SECONDS,
)  # fmt: skip
S3_PUT_SECONDS = BatchHistogram(
    "replaywatch.s3.put.duration", unit="s", description="Duration of one diff upload to S3", boundaries=SECONDS
)

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


_rates: list[tuple[str, str, float, float | None, bool]] = []


def set_rates(rows: list[tuple[str, str, float, float | None, bool]]) -> None:
    """The drift rates of the last alert window judged: (cohort, policy, rate, reference
    rate, alert open), at most ``REPLAYWATCH_RATES_METRIC_COHORTS`` cohorts and (other)."""
    _rates[:] = rows


def _observe_rate(options: CallbackOptions) -> Iterable[Observation]:
    for cohort, policy, rate, _, _ in _rates:
        yield Observation(rate, {"cohort": cohort, "policy": policy})


def _observe_reference(options: CallbackOptions) -> Iterable[Observation]:
    for cohort, policy, _, reference, _ in _rates:
        if reference is not None:
            yield Observation(reference, {"cohort": cohort, "policy": policy})


def _observe_alerts(options: CallbackOptions) -> Iterable[Observation]:
    for cohort, policy, _, _, alert in _rates:
        yield Observation(int(alert), {"cohort": cohort, "policy": policy})


meter.create_observable_gauge(
    "replaywatch.drift.rate", [_observe_rate],
    description="Share of comparisons not within tolerance in the cohort's last alert window judged",
)  # fmt: skip
meter.create_observable_gauge(
    "replaywatch.drift.reference_rate", [_observe_reference],
    description="The drift rate of the reference the cohort's last window was tested against",
)  # fmt: skip
meter.create_observable_gauge(
    "replaywatch.drift.alert_open", [_observe_alerts],
    description="1 while a drift-rate alert of the cohort is open",
)  # fmt: skip


_ready: list[Callable[[], bool]] = []


def _observe_ready(options: CallbackOptions) -> Iterable[Observation]:
    for source in _ready:
        yield Observation(int(source()))


meter.create_observable_gauge(
    "replaywatch.ready", [_observe_ready],
    description="1 while the consumer is ready (what /readyz answers), else 0",
)  # fmt: skip


def watch(lag: Callable[[], dict[int, int]], backlog: Callable[[], int | None],
          ready: Callable[[], bool] | None = None) -> Callable[[], None]:  # fmt: skip
    """Report this pipeline's lag, backlog and readiness in the gauges; returns the undo."""
    _lag.append(lag)
    _backlog.append(backlog)
    if ready is not None:
        _ready.append(ready)

    def undo() -> None:
        _lag.remove(lag)
        _backlog.remove(backlog)
        if ready is not None:
            _ready.remove(ready)

    return undo


def record_rule_counts(rows: Iterable[tuple[str, str, int, int]]) -> None:
    """Ignore-rule counts of committed comparisons: (policy, rule, comparisons, matches)."""
    for policy, rule, comparisons, matches in rows:
        attrs = {"policy": policy, "rule": rule}
        IGNORE_RULE_COMPARISONS.add(comparisons, attrs)
        IGNORE_RULE_MATCHES.add(matches, attrs)


class BoundedLabel:
    """A metric label whose values come from records (``provider``): each value cut to
    ``width`` characters, and past ``most`` distinct values the rest are ``other``. The
    SDK keeps a time series per value for the life of the process, so a producer that
    sends a new value per record would otherwise grow memory without bound."""

    def __init__(self, most: int = 64, width: int = 64) -> None:
        self.most, self.width = most, width
        self.seen: set[str] = set()

    def __call__(self, value: str | None) -> str:
        if value is None:
            return "unknown"
        value = value[: self.width]
        if value in self.seen:
            return value
        if len(self.seen) >= self.most:
            return "other"
        self.seen.add(value)
        return value


PROVIDER_LABEL = BoundedLabel()


def record_batch(records: int, verdicts: Sequence[tuple[str, str | None]], latencies_s: Iterable[float]) -> None:
    """A batch committed: its records, its comparisons by (verdict, provider), latencies."""
    RECORDS.add(records)
    BATCH_SIZE.record(records)
    for (verdict, provider), n in Counter(verdicts).items():
        COMPARISONS.add(n, {"verdict": verdict, "provider": PROVIDER_LABEL(provider)})
    LATENCY.record_many([max(seconds, 0.0) for seconds in latencies_s])


def record_dead_letters(reasons: Iterable[str]) -> None:
    for reason, n in Counter(reasons).items():
        DEAD_LETTERS.add(n, {"reason": reason})


# --- traces -----------------------------------------------------------------------

TRACEPARENT = "traceparent"


def _traceparent(record: Any) -> bytes | None:
    for key, value in record.headers or ():
        if key == TRACEPARENT:
            return value  # type: ignore[no-any-return]
    return None


_TRACEPARENT = re.compile(rb"[ \t]*(00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2}))[ \t]*")
"""A W3C ``traceparent`` of version 00, as OTel's propagator reads it: lowercase hex (a
bare ``int(x, 16)`` would also take capitals, signs and underscores), spaces or tabs
around it allowed."""
_NO_TRACE, _NO_SPAN = b"0" * 32, b"0" * 16


def _match(header: bytes) -> re.Match[bytes] | None:
    """The parts of a valid ``traceparent`` (version 00, ids not all zero), or None."""
    m = _TRACEPARENT.fullmatch(header)
    return m if m is not None and m[2] != _NO_TRACE and m[3] != _NO_SPAN else None


def _valid_traceparent(header: bytes) -> bytes | None:
    """A valid ``traceparent`` (version 00) without what surrounds it, or None; checked
    without building its span context: the output event of every comparison carries it on."""
    m = _match(header)
    return None if m is None else m[1]


def _linked_context(header: bytes) -> SpanContext | None:
    """The remote span context of a W3C ``traceparent`` value (version 00), if valid.
    Parsed here rather than by the propagator: this runs for every input record, and
    the propagator's regex and Context objects cost four times as much."""
    m = _match(header)
    if m is None:
        return None
    return SpanContext(int(m[2], 16), int(m[3], 16), is_remote=True, trace_flags=TraceFlags(int(m[4], 16)))


def _sampled(traceparent: bytes) -> bool:
    """The sampled flag of a valid ``traceparent`` (as ``_valid_traceparent`` returns it):
    the low bit of its last hex digit."""
    return traceparent[-1:] in _ODD_HEX


def producer_context(record: Any) -> otel_context.Context | None:
    """The producer's trace context (traceparent, and tracestate if any) from a record's
    headers, as the parent of a span (None when it has none, or an invalid one)."""
    header = _traceparent(record)
    ctx = None if header is None else _linked_context(header)
    if ctx is None:
        return None
    state = next((v for k, v in record.headers if k == "tracestate"), None)
    # W3C tracestate is ASCII: any other is dropped, as OTel's propagator drops what it cannot read
    if state is not None and state.isascii():
        ctx = SpanContext(ctx.trace_id, ctx.span_id, True, ctx.trace_flags, TraceState.from_header([state.decode()]))
    return trace.set_span_in_context(NonRecordingSpan(ctx))


def tracing() -> bool:
    """Whether spans are recorded at all (an SDK provider is installed)."""
    return not isinstance(trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


def record_links(records: Iterable[Any]) -> list[Link]:
    """A span link per input record whose producer span was sampled (an unsampled one
    is in no trace backend, so a link to it leads nowhere)."""
    if not tracing():
        return []
    links = []
    for r in records:
        header = _traceparent(r)
        # the sampled flag is the low bit of the last hex digit: most producers sample few
        # traces, and an unsampled header is passed over without being parsed
        if header is not None and _sampled(header.rstrip(b" \t")) and (ctx := _linked_context(header)) is not None:
            links.append(Link(ctx))
    return links


_ODD_HEX = frozenset(bytes([c]) for c in b"13579bdfBDF")


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


def comparison_trace(record: Any, c: Any, drifted: bool) -> str | None:
    """The trace context for a comparison's output event: for a drift or divergence, a
    span of its own, a child of the record's producer span (or of the current batch
    span); otherwise the producer's context as it came. The ``traceparent`` value."""
    header = _traceparent(record)
    valid = None if header is None else _valid_traceparent(header)
    # the span follows its producer's sampling decision: an unsampled producer gets none
    # (the event keeps the producer's context), which spares the SDK's work for it
    if drifted and tracer_is_recording() and (valid is None or _sampled(valid)):
        attributes = {
            "replaywatch.run_id": c.run_id,
            "replaywatch.step_id": c.step_id,
            "replaywatch.verdict": c.verdict.value,
            "replaywatch.event_id": c.event_id,
            "messaging.kafka.offset": record.offset,
        }
        span = tracer.start_span("compare", context=producer_context(record), attributes=attributes)
        span.end()
        ctx = span.get_span_context()
        return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"
    return None if valid is None else valid.decode("ascii")


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
    if _otlp("METRICS"):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        _prometheus = _scraped_and_pushed(PrometheusMetricReader, OTLPMetricExporter())
    else:
        _prometheus = with_batch_histograms(PrometheusMetricReader)()
    readers: list[MetricReader] = [_prometheus]
    # shutdown() flushes them at exit, within a time limit (the SDK's own exit hook has none)
    spans = TracerProvider(resource=resource, span_limits=SpanLimits(max_links=max_links), shutdown_on_exit=False)
    exported = False
    if _otlp("TRACES"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        spans.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        exported = True
    if os.environ.get("REPLAYWATCH_OTEL_CONSOLE") == "1":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        readers.append(
            with_batch_histograms(PeriodicExportingMetricReader)(ConsoleMetricExporter(), export_interval_millis=10_000)
        )
        spans.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        exported = True
    metrics.set_meter_provider(MeterProvider(resource=resource, metric_readers=readers, shutdown_on_exit=False,
                                             exemplar_filter=_exemplar_filter()))  # fmt: skip
    if exported:  # spans with nowhere to go are not made at all
        trace.set_tracer_provider(spans)
    _instrument_asyncpg()
    return True


def _scraped_and_pushed(reader_class: Any, exporter: Any) -> Any:
    """One metric reader that serves /metrics *and* exports by OTLP, every
    ``OTEL_METRIC_EXPORT_INTERVAL`` ms (60 s): the SDK aggregates each measurement once
    per reader, so two readers (Prometheus and a periodic OTLP one) made every latency
    record cost twice. Both outputs are cumulative, so one aggregation serves both."""

    class ScrapedAndPushed(reader_class):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self._exporter = exporter
            self._push = threading.Lock()
            self._pushing = False
            self._stop = threading.Event()
            interval = float(os.environ.get("OTEL_METRIC_EXPORT_INTERVAL", "60000")) / 1000
            self._thread = threading.Thread(target=self._every, args=(interval,), name="otlp-metrics", daemon=True)
            self._thread.start()

        def _every(self, interval: float) -> None:
            while not self._stop.wait(interval):
                self.push()

        def push(self) -> None:
            with self._push:
                self._pushing = True
                try:
                    self.collect()
                except Exception as exc:  # an export that fails is logged and tried again next time
                    logger.warning("telemetry: OTLP metric export failed: %s", exc)
                finally:
                    self._pushing = False

        def _receive_metrics(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> None:
            super()._receive_metrics(metrics_data, timeout_millis, **kwargs)
            if self._pushing and metrics_data is not None:
                self._exporter.export(metrics_data, timeout_millis=timeout_millis)

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            self._stop.set()
            self.push()  # what was measured since the last export
            self._exporter.shutdown(timeout_millis=timeout_millis)
            super().shutdown(timeout_millis, **kwargs)

    return with_batch_histograms(ScrapedAndPushed)()


def _exemplar_filter() -> Any:
    """Exemplars off unless ``OTEL_METRICS_EXEMPLAR_FILTER`` asks for them (the SDK's
    default, ``trace_based``, looks at the current span on every measurement: a third of
    the cost of recording one latency, measured; see bench/README.md)."""
    if os.environ.get("OTEL_METRICS_EXEMPLAR_FILTER"):
        return None  # the SDK reads the variable
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter

    return AlwaysOffExemplarFilter()


def _otlp(signal: str) -> bool:
    """OTLP export of a signal: an endpoint is set, and ``OTEL_<signal>_EXPORTER`` (the
    standard variable) does not say otherwise (``none``; ``prometheus`` for metrics:
    /metrics alone, one aggregation per measurement instead of two)."""
    exporters = {e.strip() for e in os.environ.get(f"OTEL_{signal}_EXPORTER", "otlp").lower().split(",")}
    if "otlp" not in exporters:
        return False
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")
    )


def _instrument_asyncpg() -> None:
    """A span per PostgreSQL query, under the batch's write span (contrib instrumentation)."""
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor

    AsyncPGInstrumentor().instrument()  # type: ignore[no-untyped-call]


def shutdown(timeout: float = 3.0) -> None:
    """Flush what the exporters hold (at exit), for at most ``timeout`` seconds: an OTLP
    endpoint that does not answer must not keep the process from exiting."""

    def flush() -> None:
        for provider in (trace.get_tracer_provider(), metrics.get_meter_provider()):
            stop = getattr(provider, "shutdown", None)
            if stop is not None:
                try:
                    stop()
                except Exception as exc:
                    logger.warning("telemetry: could not flush at exit: %s", exc)

    flusher = threading.Thread(target=flush, name="telemetry-shutdown", daemon=True)
    flusher.start()
    flusher.join(timeout)
    if flusher.is_alive():
        logger.warning("telemetry: the exporters did not finish within %.0fs; exiting without them", timeout)
