"""The input record's W3C ``traceparent``, read as OpenTelemetry's own propagator reads
it (the oracle), for headers of version 00 made of any hex-like parts."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from replaywatch import telemetry
from replaywatch.compare.engine import Verdict

HEXISH = "0123456789abcdefABCDEF_+-x \t"


def part(n: int) -> st.SearchStrategy[str]:
    """n hex digits, now and then with a capital, a sign, an underscore or a zero run."""
    return st.one_of(
        st.text("0123456789abcdef", min_size=n, max_size=n),
        st.just("0" * n),
        st.text(HEXISH, min_size=n - 1, max_size=n + 1),
    )


SPACE = st.sampled_from(["", "", " ", "\t", " \t"])  # around the value: the propagator allows it
headers = st.builds(lambda lead, t, s, f, tail, trail: f"{lead}00-{t}-{s}-{f}{tail}{trail}".encode(), SPACE,
                    part(32), part(16), part(2), st.sampled_from(["", "", "", "-", "-00", "x"]), SPACE)  # fmt: skip


def oracle(header: bytes) -> trace.SpanContext | None:
    ctx = trace.get_current_span(TraceContextTextMapPropagator().extract({"traceparent": header.decode()}))
    span_context = ctx.get_span_context()
    return span_context if span_context.is_valid else None


@settings(max_examples=500)
@given(headers)
def test_a_traceparent_is_read_as_the_propagator_reads_it(header: bytes) -> None:
    expected = oracle(header)
    got = telemetry._linked_context(header)
    valid = telemetry._valid_traceparent(header)
    assert (valid is not None) == (expected is not None)
    if expected is None:
        assert got is None
        return
    assert got is not None
    assert (got.trace_id, got.span_id, got.trace_flags, got.is_remote) == (
        expected.trace_id, expected.span_id, expected.trace_flags, True,
    )  # fmt: skip
    assert valid == header.strip(b" \t")  # carried on without what surrounds it
    assert telemetry._sampled(valid) == expected.trace_flags.sampled


def record(header: bytes | None) -> Any:
    return SimpleNamespace(headers=[] if header is None else [("traceparent", header)], offset=7, partition=0)


@settings(max_examples=200)
@given(headers)
def test_an_event_that_did_not_drift_carries_its_producers_context_when_valid(header: bytes) -> None:
    c = SimpleNamespace(run_id="r", step_id="s", verdict=Verdict.WITHIN_TOLERANCE, event_id="e")
    expected = header.strip(b" \t").decode() if oracle(header) is not None else None
    assert telemetry.comparison_trace(record(header), c, drifted=False) == expected


def test_a_record_without_a_traceparent_has_none() -> None:
    c = SimpleNamespace(run_id="r", step_id="s", verdict=Verdict.DRIFT, event_id="e")
    assert telemetry.comparison_trace(record(None), c, drifted=False) is None
    assert telemetry.record_links([record(None)]) == []


def test_a_tracestate_that_is_not_ascii_is_dropped_not_raised() -> None:
    header = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    rec = SimpleNamespace(headers=[("traceparent", header), ("tracestate", b"k=\xff\xfe")], offset=7, partition=0)
    ctx = telemetry.producer_context(rec)
    assert ctx is not None
    span = trace.get_current_span(ctx).get_span_context()
    assert span.trace_id == 0x0AF7651916CD43DD8448EB211C80319C and len(span.trace_state) == 0
    ok = SimpleNamespace(headers=[("traceparent", header), ("tracestate", b"k=v")], offset=7, partition=0)
    assert dict(trace.get_current_span(telemetry.producer_context(ok)).get_span_context().trace_state) == {"k": "v"}
