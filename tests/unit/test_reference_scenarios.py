"""The reference executor's five scenarios, on the pure engine."""

from __future__ import annotations

import hashlib

import orjson
import pytest

from replaywatch.compare import Attempt, CompareConfig, DiffKind, Verdict, compare_attempts
from replaywatch.core.projection import replay_step
from replaywatch.exceptions import MissingOutputSnapshots

RUN, STEP = "run-1", "step-1"


def attempt(n: int, snapshot: object, **kw: object) -> Attempt:
    return Attempt(RUN, STEP, n, snapshot, **kw)  # type: ignore[arg-type]


def test_identical_attempt_is_within_with_zero_deltas() -> None:
    snap = {"status": "ok", "payload": {"message": "hi"}, "tokens": 600, "cost": 0.002}
    result = compare_attempts(attempt(1, snap), attempt(2, dict(snap)), CompareConfig())
    assert result.verdict is Verdict.WITHIN_TOLERANCE
    assert result.token_delta == 0.0
    assert result.cost_delta == 0.0
    assert result.structure_equal and result.tokens_within and result.cost_within
    assert result.diff is None


def test_one_percent_tolerance() -> None:
    recorded = {"message": "Original output", "metrics": {"tokens": 100, "cost": 1.00}}
    current = {"message": "Original output", "metrics": {"tokens": 100.5, "cost": 1.009}}
    result = compare_attempts(attempt(1, recorded), attempt(2, current), CompareConfig(0.01, 0.01))
    assert result.verdict is Verdict.WITHIN_TOLERANCE
    assert result.token_delta == pytest.approx(0.5)
    assert result.cost_delta == pytest.approx(0.009)
    # and the same numbers at 0 tolerance drift
    strict = compare_attempts(attempt(1, recorded), attempt(2, current), CompareConfig())
    assert strict.verdict is Verdict.DRIFT
    assert not strict.tokens_within and not strict.cost_within and strict.structure_equal


def test_changed_attestation_ids_diverge_with_a_diff() -> None:
    result = compare_attempts(
        attempt(1, {"status": "ok", "attestation_ids": ["a-1"]}),
        attempt(2, {"status": "ok", "attestation_ids": ["b-2"]}),
        CompareConfig(0.01, 0.01),
    )
    assert result.verdict is Verdict.ATTESTATION_DIVERGENCE
    assert result.diff is not None and result.diff.kind is DiffKind.ATTESTATION
    assert result.missing_attestations == ("a-1",)
    assert result.unexpected_attestations == ("b-2",)
    assert result.diff.sha256 == hashlib.sha256(result.diff.body).hexdigest()
    assert orjson.loads(result.diff.body) == {
        "run_id": RUN,
        "step_id": STEP,
        "recorded": ["a-1"],
        "current": ["b-2"],
        "missing": ["a-1"],
        "unexpected": ["b-2"],
    }


def test_changed_tool_event_payload_diverges() -> None:
    snap = {"status": "ok", "attestation_ids": ["same"]}
    before = [{"kind": "tool.run", "payload": {"stdout": "hello"}, "trace": {"span_id": "abc"}}]
    after = [{"kind": "tool.run", "payload": {"stdout": "goodbye"}, "trace": {"span_id": "def"}}]
    result = compare_attempts(
        attempt(1, snap, tool_events=before), attempt(2, snap, tool_events=after), CompareConfig()
    )
    assert result.verdict is Verdict.TOOL_EVENT_DIVERGENCE
    assert result.diff is not None and result.diff.kind is DiffKind.TOOL
    body = orjson.loads(result.diff.body)
    # the reference's payload, and the change by kind
    assert {k: body[k] for k in ("run_id", "step_id", "recorded", "current")} == {
        "run_id": RUN, "step_id": STEP, "recorded": before, "current": after,
    }  # fmt: skip
    assert body["changes"] == [
        {"kind": "changed", "from": 0, "to": 0, "tool": None, "patch": [
            {"op": "replace", "path": "/payload/stdout", "value": "goodbye"},
            {"op": "replace", "path": "/trace/span_id", "value": "def"},
        ]},
    ]  # fmt: skip
    assert result.tool_changes == (0, 0, 0, 1)


def test_no_output_snapshot_is_a_clear_error() -> None:
    with pytest.raises(MissingOutputSnapshots, match="missing output snapshots; cannot run mocked replay"):
        replay_step([attempt(1, None), attempt(2, None)], CompareConfig())
