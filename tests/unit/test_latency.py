"""Latency drift: the events' ``latency_ms`` compared with a relative tolerance like
tokens and cost, off unless a policy sets one; both latencies and the delta on every
event; kept with the step in PostgreSQL's row."""

from __future__ import annotations

import pytest

from replaywatch import codec
from replaywatch.compare import Attempt, CompareConfig, Verdict, compare_attempts, prepare
from replaywatch.compare import policy as policies
from replaywatch.compare.canonical import MAX_DEPTH
from replaywatch.store.postgres import _attempt_from, _attempt_json
from tests.faults.adversarial import nested


def pair(before: float | None, after: float | None, config: CompareConfig) -> object:
    return compare_attempts(Attempt("r", "s", 1, {"a": 1}, latency_ms=before),
                            Attempt("r", "s", 2, {"a": 1}, latency_ms=after), config)  # fmt: skip


def test_latency_is_not_compared_unless_a_tolerance_is_set() -> None:
    c = pair(800, 4000, CompareConfig())
    assert c.verdict is Verdict.WITHIN_TOLERANCE and c.latency_within  # type: ignore[attr-defined]
    assert c.latency == (800, 4000) and c.latency_delta == 3200  # type: ignore[attr-defined]


@pytest.mark.parametrize(("after", "verdict"), [(1200, Verdict.WITHIN_TOLERANCE), (1201, Verdict.DRIFT),
                                                (400, Verdict.WITHIN_TOLERANCE), (399, Verdict.DRIFT)])  # fmt: skip
def test_a_relative_latency_tolerance_at_its_edges(after: float, verdict: Verdict) -> None:
    c = pair(800, after, CompareConfig(latency_tolerance=0.5))
    assert c.verdict is verdict  # type: ignore[attr-defined]


def test_an_unknown_latency_is_within() -> None:
    assert pair(None, 5000, CompareConfig(latency_tolerance=0.1)).verdict is Verdict.WITHIN_TOLERANCE  # type: ignore[attr-defined]


def test_the_event_carries_both_latencies_and_the_delta() -> None:
    c = pair(800, 1300, CompareConfig(latency_tolerance=0.5))
    rec = codec.comparison_record(c, diff_uri=None, source=("t", 0, 1), occurred_at_ms=1, detected_at_ms=2)  # type: ignore[arg-type]
    got = codec.decode_comparison(codec.encode_comparison(rec))
    assert (got["baseline_latency_ms"], got["current_latency_ms"], got["latency_delta_ms"]) == (800.0, 1300.0, 500.0)
    assert got["latency_within"] is False and got["verdict"] == "drift"


def test_the_input_event_latency_is_read_and_a_policy_sets_the_tolerance() -> None:
    value = codec.encode_attempt({"event_id": "5b1c2d3e-8f4a-4b6c-9d0e-7a1b2c3d4e5f", "run_id": "r", "step_id": "s",
                                  "attempt": 1, "status": "succeeded", "occurred_at": 1, "output_snapshot": "{}",
                                  "latency_ms": 812})  # fmt: skip
    assert codec.decode_attempt(value).latency_ms == 812.0
    config = policies.parse({"default": {"latency_tolerance": 0.25}}, CompareConfig())
    assert config.latency_tolerance == 0.25 and config.fingerprint() != CompareConfig().fingerprint()


@pytest.mark.parametrize("snapshot", [{"a": 1}, nested(MAX_DEPTH, {"v": 1})])
def test_the_stored_row_keeps_the_latency(snapshot: object) -> None:
    stored = prepare(3, snapshot, [{"tool": "x"}], CompareConfig(), 812.5)
    text = _attempt_json(stored)
    assert text is not None and _attempt_from(text, CompareConfig()) == stored
    no_latency = prepare(3, snapshot, None, CompareConfig())
    assert _attempt_from(_attempt_json(no_latency), CompareConfig()) == no_latency
