"""Rule 5: tool events."""

from __future__ import annotations

from replaywatch.compare import ABSENT, Attempt, CompareConfig, Verdict, compare_attempts


def cmp(a: object, b: object, **cfg: object):  # type: ignore[no-untyped-def]
    return compare_attempts(
        Attempt("r", "s", 1, {"x": 1}, tool_events=a),
        Attempt("r", "s", 2, {"x": 1}, tool_events=b),
        CompareConfig.build(**cfg),  # type: ignore[arg-type]
    )


def test_both_absent_is_equal() -> None:
    assert cmp(ABSENT, ABSENT).tool_events_equal


def test_absent_against_present_diverges() -> None:
    assert cmp(ABSENT, []).verdict is Verdict.TOOL_EVENT_DIVERGENCE
    assert cmp([], ABSENT).verdict is Verdict.TOOL_EVENT_DIVERGENCE


def test_json_null_is_present() -> None:
    assert cmp(ABSENT, None).verdict is Verdict.TOOL_EVENT_DIVERGENCE
    assert cmp(None, None).tool_events_equal


def test_key_order_is_canonicalized() -> None:
    assert cmp([{"a": 1, "b": {"c": 2, "d": 3}}], [{"b": {"d": 3, "c": 2}, "a": 1}]).tool_events_equal


def test_list_order_matters() -> None:
    assert not cmp([1, 2], [2, 1]).tool_events_equal


def test_usage_keys_are_not_stripped_from_tool_events() -> None:
    assert cmp([{"tokens": 1}], [{"tokens": 2}]).verdict is Verdict.TOOL_EVENT_DIVERGENCE


def test_ignored_span_id() -> None:
    before = [{"kind": "tool.run", "trace": {"span_id": "abc"}}]
    after = [{"kind": "tool.run", "trace": {"span_id": "def"}}]
    assert cmp(before, after).verdict is Verdict.TOOL_EVENT_DIVERGENCE
    assert cmp(before, after, ignore=["tool_events[*].trace.span_id"]).verdict is Verdict.WITHIN_TOLERANCE


def test_precedence_attestation_over_tool_over_drift() -> None:
    a = Attempt("r", "s", 1, {"attestation_ids": ["a"], "m": 1, "tokens": 1}, tool_events=[1])
    b = Attempt("r", "s", 2, {"attestation_ids": ["b"], "m": 2, "tokens": 9}, tool_events=[2])
    r = compare_attempts(a, b, CompareConfig())
    assert r.verdict is Verdict.ATTESTATION_DIVERGENCE
    # every field is computed whatever the verdict
    assert not r.tool_events_equal and not r.structure_equal and not r.tokens_within
    b2 = Attempt("r", "s", 2, {"attestation_ids": ["a"], "m": 2, "tokens": 9}, tool_events=[2])
    assert compare_attempts(a, b2, CompareConfig()).verdict is Verdict.TOOL_EVENT_DIVERGENCE
    b3 = Attempt("r", "s", 2, {"attestation_ids": ["a"], "m": 2, "tokens": 9}, tool_events=[1])
    assert compare_attempts(a, b3, CompareConfig()).verdict is Verdict.DRIFT
