"""Telemetry on the real stack: spans and their links to the producer's trace, metric
values, /metrics over HTTP, OTLP to a receiver that decodes it, the dashboard's names."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaProducer
from opentelemetry import metrics, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from replaywatch import codec, telemetry
from replaywatch.compare import comparison_id
from replaywatch.exceptions import TransientError
from replaywatch.runtime.retry import Backoff
from replaywatch.telemetry.histograms import with_batch_histograms
from replaywatch.telemetry.http_endpoints import serving_endpoints
from tests.conftest import Endpoints
from tests.integration.streaming import Lane, spawn_run, stop_proc

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "replaywatch.json"
NOW = 1_790_000_000_000


class Otel:
    def __init__(self) -> None:
        self.spans = InMemorySpanExporter()
        # the readers telemetry.setup() makes: with the histograms recorded a batch at a time
        self.reader = with_batch_histograms(InMemoryMetricReader)()
        self.prometheus = with_batch_histograms(PrometheusMetricReader)()

    def points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        out = []
        for rm in data.resource_metrics if data else []:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == name:
                        out += list(m.data.data_points)
        return out


@pytest.fixture(scope="session")
def otel() -> Iterator[Otel]:
    """The SDK's providers for this test process, with in-memory readers (installed once:
    OpenTelemetry's global providers cannot be replaced)."""
    o = Otel()
    trace.set_tracer_provider(TracerProvider(span_limits=SpanLimits(max_links=2000)))
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider), "another provider was installed first"
    provider.add_span_processor(SimpleSpanProcessor(o.spans))
    metrics.set_meter_provider(MeterProvider(metric_readers=[o.reader, o.prometheus]))
    telemetry._instrument_asyncpg()
    yield o


@pytest.fixture
def lane(endpoints: Endpoints, pg_schema: str, bucket: str) -> Lane:
    return Lane(endpoints, pg_schema, bucket)


def traceparent() -> tuple[str, str, bytes]:
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01".encode()


def usage(run: str, step: str, n: int, tokens: float, provider: str) -> dict[str, Any]:
    snap = {"message": "same", "metrics": {"tokens": tokens, "cost": 1.0}}
    return {"event_id": str(uuid.uuid4()), "run_id": run, "step_id": step, "attempt": n, "status": "succeeded",
            "occurred_at": NOW + n, "output_snapshot": orjson.dumps(snap).decode(), "provider": provider}  # fmt: skip


async def send_traced(lane: Lane, events: list[dict[str, Any]], poison: int = 0) -> dict[tuple[str, str, int], Any]:
    """Send each event with a traceparent of its own; (run, step, attempt) -> (trace id, span id, header)."""
    s = lane.settings()
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, enable_idempotence=True)
    await producer.start()
    sent = {}
    try:
        for e in events:
            tid, sid, header = traceparent()
            sent[(e["run_id"], e["step_id"], e["attempt"])] = (tid, sid, header)
            await producer.send(s.input_topic, codec.encode_attempt(e), key=e["run_id"].encode(),
                                headers=[("traceparent", header)])  # fmt: skip
        for _ in range(poison):
            await producer.send(s.input_topic, b"\x00not avro", key=b"poison")
        await producer.flush()
    finally:
        await producer.stop()
    return sent


def total(points: list[Any], **attrs: str) -> float:
    return float(sum(p.value for p in points if all(p.attributes.get(k) == v for k, v in attrs.items())))


async def test_spans_links_attributes_and_metric_values_for_a_known_input(otel: Otel, lane: Lane) -> None:
    lane.extra = {"tokens_tolerance": 0.01}
    provider = f"prov-{lane.tag}"
    run = f"run-{lane.tag}"
    # step i: tokens +i %, so steps 0-1 within tolerance, steps 2-5 drift
    events = [usage(run, f"s{i}", n, 1000 + (10 * i if n == 2 else 0), provider) for i in range(6) for n in (1, 2)]
    await lane.create_topics()
    records_before = total(otel.points("replaywatch.records"))
    dead_before = total(otel.points("replaywatch.dead_letters"), reason="unknown_schema_id")
    # read from the histogram itself: before anything is recorded in this process's provider,
    # the SDK collects nothing and its readers are not called (other tests may have recorded)
    latency_before: Any = telemetry.LATENCY.metric()
    before_counts = list(latency_before.data.data_points[0].bucket_counts) if latency_before else [0] * 17
    sent = await send_traced(lane, events, poison=1)
    otel.spans.clear()
    async with lane.pipeline():
        out = await lane.outputs(want=6)
        # the lag of each owned partition, from its high-water mark, while it runs
        lag = otel.points("replaywatch.consumer.lag")
    settings = lane.settings()
    assert {p.attributes["partition"] for p in lag} == {"0", "1", "2", "3"} and all(p.value >= 0 for p in lag)

    # metrics: records, comparisons by verdict and provider, dead letters by reason, stages, latency
    assert total(otel.points("replaywatch.records")) - records_before == len(events) + 1
    comps = otel.points("replaywatch.comparisons")
    assert total(comps, provider=provider, verdict="within_tolerance") == 2
    assert total(comps, provider=provider, verdict="drift") == 4
    assert total(otel.points("replaywatch.dead_letters"), reason="unknown_schema_id") - dead_before == 1
    stages = {p.attributes["stage"]: p.count for p in otel.points("replaywatch.stage.duration")}
    assert stages.keys() >= {"prepare", "write", "publish"} and min(stages.values()) > 0
    # one latency per comparison: occurred_at is months before now, above the last bound (300 s)
    (latency,) = otel.points("replaywatch.latency")
    assert [a - b for a, b in zip(latency.bucket_counts, before_counts, strict=True)] == [0] * 16 + [6]
    assert sum(p.count for p in otel.points("replaywatch.batch.size")) >= 1

    spans: list[Any] = list(otel.spans.get_finished_spans())
    prepares = [s for s in spans if s.name == f"prepare {settings.input_topic}"]
    assert prepares, [s.name for s in spans]
    for s in prepares:
        assert s.attributes["messaging.system"] == "kafka"
        assert s.attributes["messaging.destination.name"] == settings.input_topic
        assert s.attributes["messaging.consumer.group.name"] == settings.group_id
        assert s.attributes["messaging.batch.message_count"] >= 1
    # a link per traced (and sampled) input record, to its producer's span
    linked = {(format(link.context.trace_id, "032x"), format(link.context.span_id, "016x"))
              for s in prepares for link in s.links}  # fmt: skip
    assert linked == {(tid, sid) for tid, sid, _ in sent.values()}
    writes = [s for s in spans if s.name == f"write {settings.input_topic}"]
    assert writes and all(s.attributes["messaging.batch.message_count"] >= 1 for s in writes)
    # the contrib asyncpg instrumentation: the commit statement is a child of a write span
    write_ids = {s.context.span_id for s in writes}
    assert any(s.attributes.get("db.system") == "postgresql" and s.parent and s.parent.span_id in write_ids
               for s in spans)  # fmt: skip

    # a span per drifted comparison, a child of the producer's span of the attempt that caused it
    compares = {s.attributes["replaywatch.step_id"]: s for s in spans if s.name == "compare"}
    assert sorted(compares) == ["s2", "s3", "s4", "s5"]
    for step, s in compares.items():
        tid, sid, _ = sent[(run, step, 2)]
        assert format(s.context.trace_id, "032x") == tid and format(s.parent.span_id, "016x") == sid
        assert s.attributes["replaywatch.verdict"] == "drift"
        assert s.attributes["replaywatch.event_id"] == comparison_id(run, step, 1, 2)
        assert s.attributes["messaging.kafka.offset"] >= 0
    # the output events carry it: a drift leads to its compare span, within tolerance to the producer
    for e in out:
        header = e["_headers"]["traceparent"].decode()
        tid, _, original = sent[(run, e["step_id"], 2)]
        if e["verdict"] == "drift":
            span = compares[e["step_id"]]
            assert header == f"00-{tid}-{format(span.context.span_id, '016x')}-01"
        else:
            assert header == original.decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


METRICS = [
    "replaywatch_records_total",
    "replaywatch_comparisons_total",
    "replaywatch_dead_letters_total",
    "replaywatch_events_published_total",
    "replaywatch_retries_total",
    "replaywatch_batch_size_bucket",
    "replaywatch_stage_duration_seconds_bucket",
    "replaywatch_latency_seconds_bucket",
    "replaywatch_s3_put_duration_seconds_bucket",
    "replaywatch_consumer_lag",
    "replaywatch_outbox_backlog",
]


async def test_metrics_are_scraped_over_http_and_the_dashboard_reads_them(otel: Otel, lane: Lane) -> None:
    lane.extra = {"tokens_tolerance": 0.01}
    run = f"run-{lane.tag}"
    events = [usage(run, f"s{i}", n, 1000 + (50 * i if n == 2 else 0), "openai") for i in range(4) for n in (1, 2)]
    events[-1]["output_snapshot"] = orjson.dumps({"other": "shape"}).decode()  # a structural diff: an S3 put
    await lane.create_topics()
    await send_traced(lane, events, poison=1)
    # a retry through the one policy, by cause
    failures = [TransientError("S3 unavailable")]

    async def flaky() -> None:
        if failures:
            raise failures.pop() from ConnectionResetError()

    await Backoff(asyncio.Event()).call(flaky, "a flaky call")
    async with lane.pipeline() as pipeline:
        await lane.outputs(want=4)
        port = free_port()
        async with serving_endpoints("127.0.0.1", port, pipeline.readiness), aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
                text = await resp.text()
            async with http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200
            async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                assert resp.status == 200, await resp.text()
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    missing = [m for m in METRICS if m not in names]
    assert not missing, f"not on /metrics: {missing}"
    assert re.search(r'replaywatch_retries_total\{[^}]*cause="ConnectionResetError"', text)
    assert re.search(r'replaywatch_comparisons_total\{[^}]*provider="openai"[^}]*verdict="drift"', text) or re.search(
        r'replaywatch_comparisons_total\{[^}]*verdict="drift"[^}]*provider="openai"', text
    )
    # every metric the dashboard queries is one that is served
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"replaywatch_[a-z0-9_]+", e)}
    assert len(used) >= 8 and used <= names, used - names


class Receiver:
    """An OTLP/HTTP receiver: decodes what it gets with opentelemetry-proto."""

    def __init__(self) -> None:
        self.metric_names: dict[str, float] = {}
        self.histogram_counts: dict[str, int] = {}
        self.span_names: list[str] = []
        self.service_names: set[str] = set()

    def app(self) -> web.Application:
        async def metrics_in(request: web.Request) -> web.Response:
            req = ExportMetricsServiceRequest()
            req.ParseFromString(await request.read())
            for rm in req.resource_metrics:
                self.service_names |= {a.value.string_value for a in rm.resource.attributes if a.key == "service.name"}
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        points = m.sum.data_points if m.HasField("sum") else []
                        self.metric_names[m.name] = sum(p.as_int or p.as_double for p in points)
                        if m.HasField("histogram"):
                            self.histogram_counts[m.name] = sum(p.count for p in m.histogram.data_points)
            return web.Response(body=b"", content_type="application/x-protobuf")

        async def traces_in(request: web.Request) -> web.Response:
            req = ExportTraceServiceRequest()
            req.ParseFromString(await request.read())
            self.span_names += [s.name for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
            return web.Response(body=b"", content_type="application/x-protobuf")

        app = web.Application()
        app.add_routes([web.post("/v1/metrics", metrics_in), web.post("/v1/traces", traces_in)])
        return app


async def test_otlp_over_http_reaches_a_receiver(lane: Lane) -> None:
    receiver = Receiver()
    runner = web.AppRunner(receiver.app())
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    run = f"run-{lane.tag}"
    events = [usage(run, f"s{i}", n, 1000 + (50 * i if n == 2 else 0), "anthropic") for i in range(5) for n in (1, 2)]
    await lane.create_topics()
    proc = spawn_run({**os.environ, **lane.env, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                      "OTEL_METRIC_EXPORT_INTERVAL": "500", "OTEL_BSP_SCHEDULE_DELAY": "100",
                      "OTEL_SERVICE_NAME": "replaywatch-test"})  # fmt: skip
    try:
        await send_traced(lane, events)
        await lane.outputs(want=5)
        async with asyncio.timeout(30):
            while (
                receiver.metric_names.get("replaywatch.records", 0) < len(events)
                or receiver.histogram_counts.get("replaywatch.latency", 0) < 5
                or not any(n.startswith("prepare ") for n in receiver.span_names)
            ):
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
                await asyncio.sleep(0.1)
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 20)
        await runner.cleanup()
    assert receiver.service_names == {"replaywatch-test"}
    assert receiver.metric_names["replaywatch.comparisons"] == 5
    # the histograms recorded a batch at a time reach OTLP too (histograms.py): a latency per comparison
    assert receiver.histogram_counts["replaywatch.latency"] == 5
    assert "compare" in receiver.span_names and any(n.startswith("write ") for n in receiver.span_names)


async def test_json_logs_carry_the_record_and_never_a_secret_or_a_snapshot(lane: Lane) -> None:
    password, marker = "pw-" + uuid.uuid4().hex, "BODY-" + uuid.uuid4().hex
    secret = lane.env["REPLAYWATCH_S3_SECRET_ACCESS_KEY"]  # the S3 server checks it: the real one
    dsn = lane.endpoints.postgres_dsn.replace("replaywatch@", f"replaywatch:{password}@")
    assert password in dsn  # trust authentication: the password is sent, and ignored
    run = f"run-{lane.tag}"
    events = [usage(run, "s", n, 1000 * n, "openai") for n in (1, 2)]
    for e in events:
        e["output_snapshot"] = orjson.dumps({"text": marker, "metrics": {"tokens": 1}}).decode()
    await lane.create_topics()
    proc = spawn_run({**os.environ, **lane.env, "REPLAYWATCH_LOG_FORMAT": "json", "REPLAYWATCH_LOG_LEVEL": "INFO",
                      "REPLAYWATCH_POSTGRES_DSN": dsn})  # fmt: skip
    try:
        await send_traced(lane, events, poison=1)
        await lane.outputs(want=1)
        async with asyncio.timeout(30):
            while await lane.stored_total() < len(events) + 1:
                await asyncio.sleep(0.1)
    finally:
        proc.terminate()
        _, err = await asyncio.to_thread(proc.communicate, timeout=20)
    lines = [json.loads(line) for line in err.decode().splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    text = err.decode()
    assert password not in text and secret not in text and marker not in text
    dead = [line for line in lines if line["message"].startswith("dead-lettered")]
    assert len(dead) == 1 and dead[0]["level"] == "WARNING"
    assert dead[0]["partition"] in range(4) and dead[0]["offset"] >= 0 and dead[0]["reason"] == "unknown_schema_id"


async def test_an_otlp_endpoint_that_never_answers_does_not_hold_the_exit(lane: Lane) -> None:
    """The exporters flush at exit for at most 3 s: SIGTERM still ends the process with 0."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accept, read, never answer

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    run = f"run-{lane.tag}"
    events = [usage(run, "s", n, 1000 * n, "openai") for n in (1, 2)]
    await lane.create_topics()
    proc = spawn_run({**os.environ, **lane.env, "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
                      "OTEL_BSP_SCHEDULE_DELAY": "100", "REPLAYWATCH_SHUTDOWN_SECONDS": "4"})  # fmt: skip
    try:
        await send_traced(lane, events)
        await lane.outputs(want=1)
        async with asyncio.timeout(20):  # the span exporter is stuck on the endpoint by now
            while not held:
                await asyncio.sleep(0.1)
        code, seconds = await asyncio.to_thread(stop_proc, proc, timeout=30)
    finally:
        server.close()
        for w in held:
            w.close()
    assert code == 0
    assert seconds < 4 + 3 + 5, f"SIGTERM took {seconds:.1f}s"
