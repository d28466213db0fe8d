"""The CPU budget of one record: every walk of the comparison is linear in its input
(the work it charges grows with the documents, not with their depth times their
width), and a record past its budget is dead-lettered as ``too_costly`` with the
figure while the records around it are compared."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import jsonpatch
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replaywatch.compare import Attempt, CompareConfig, Verdict, budget, compare_attempts
from replaywatch.compare.canonical import MAX_DEPTH
from replaywatch.compare.structure import json_patch, same
from replaywatch.core.batch import apply_records
from replaywatch.exceptions import TooCostly

from .strategies import json_values


def deep_and_wide(depth: int, width: int, leaf: Any) -> Any:
    """A chain of ``depth`` objects, each with ``width`` equal items beside the child:
    the pair that made the structure diff quadratic in the depth."""
    value = leaf
    for _ in range(depth - 1):
        value = {"child": value, "items": list(range(width))}
    return value


def work_of(baseline: Any, current: Any) -> int:
    with budget.limited(3600) as b:
        patch = json_patch(baseline, current)
    assert jsonpatch.apply_patch(baseline, patch) == current
    return b.spent


def test_the_structure_diff_is_linear_in_depth_times_width() -> None:
    small = work_of(deep_and_wide(100, 200, 1), deep_and_wide(100, 200, 2))
    large = work_of(deep_and_wide(400, 200, 1), deep_and_wide(400, 200, 2))
    # 4 times the nodes: about 4 times the work (asking "equal?" at each level: ~16 times)
    assert 3.5 < large / small < 5, (small, large)


def test_the_diff_of_the_deep_and_wide_pair_at_the_contract_depth_is_right() -> None:
    baseline, current = deep_and_wide(MAX_DEPTH, 50, "a"), deep_and_wide(MAX_DEPTH, 50, "b")
    patch = json_patch(baseline, current)
    assert len(patch) == 1 and patch[0]["op"] == "replace" and patch[0]["value"] == "b"
    assert patch[0]["path"] == "/child" * (MAX_DEPTH - 1)
    assert not same(baseline, current) and same(baseline, deep_and_wide(MAX_DEPTH, 50, "a"))


@settings(max_examples=300)
@given(json_values, json_values)
def test_the_patch_turns_one_document_into_the_other(a: Any, b: Any) -> None:
    patch = json_patch(a, b)
    assert same(jsonpatch.apply_patch(a, patch), b)
    assert (patch == []) == same(a, b)


def test_a_record_past_its_budget_raises_too_costly_with_the_figure() -> None:
    baseline = Attempt("r", "s", 1, deep_and_wide(400, 2000, 1))
    current = Attempt("r", "s", 2, deep_and_wide(400, 2000, 2))
    with budget.limited(0.02), pytest.raises(TooCostly) as raised:
        compare_attempts(baseline, current, CompareConfig())
    message = str(raised.value)
    assert raised.value.reason == "too_costly"
    assert "s of CPU, over the budget of 0.02 s" in message and "REPLAYWATCH_RECORD_CPU_SECONDS" in message
    assert budget.current is budget.UNLIMITED  # restored on the way out
    # unlimited, the same pair is compared
    assert compare_attempts(baseline, current, CompareConfig()).verdict is Verdict.DRIFT


def record(offset: int) -> SimpleNamespace:
    return SimpleNamespace(topic="in", partition=0, offset=offset, value=b"")


def test_a_costly_record_is_dead_lettered_and_its_neighbours_are_compared() -> None:
    cheap = [(record(0), Attempt("r", "a", 1, {"v": 1})), (record(1), Attempt("r", "a", 2, {"v": 2}))]
    costly = [(record(2), Attempt("r", "b", 1, deep_and_wide(400, 2000, 1))),
              (record(3), Attempt("r", "b", 2, deep_and_wide(400, 2000, 2)))]  # fmt: skip
    after = [(record(4), Attempt("r", "c", 1, {"v": 1})), (record(5), Attempt("r", "c", 2, {"v": 1}))]
    result = apply_records(cheap + costly + after, {}, CompareConfig(), cpu_seconds=0.02)
    assert [(r.offset, e.reason) for r, e in result.bad] == [(2, "too_costly"), (3, "too_costly")]
    assert [(r.offset, c.verdict) for r, _, c in result.emitted] == [(1, Verdict.DRIFT), (5, Verdict.WITHIN_TOLERANCE)]
    assert ("r", "b") not in result.projections  # a dead-lettered record changes nothing


@given(st.integers(1, 3 * budget.CHECK_EVERY), st.integers(1, 50))
def test_spent_counts_every_unit_charged(units: int, calls: int) -> None:
    with budget.limited(3600) as b:
        for _ in range(calls):
            budget.spend(units)
    assert b.spent == units * calls


def test_the_clock_is_read_only_once_a_record_reaches_a_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Most records never reach a check: their budget costs no clock read."""
    reads: list[float] = []
    clock = iter([10.0, 10.5, 11.5])

    def thread_time() -> float:
        reads.append(now := next(clock))
        return now

    monkeypatch.setattr(time, "thread_time", thread_time)
    with budget.limited(1.0):
        budget.spend(budget.CHECK_EVERY - 1)
    assert reads == []
    with budget.limited(1.0) as b:
        budget.spend(budget.CHECK_EVERY)  # the first check starts the clock: 10.0
        budget.spend(budget.CHECK_EVERY)  # 0.5 s later: within the second
        with pytest.raises(TooCostly, match=r"used 1\.50 s of CPU"):
            budget.spend(budget.CHECK_EVERY)  # 1.5 s after the first check
    assert b.started == 10.0 and reads == [10.0, 10.5, 11.5]
