"""Tool trajectories by mode: tables of trajectories per mode, the implications between
modes as a property, precision, recall and F1, added tools named whatever the mode, and
the engine's verdicts under each mode."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replaywatch.compare import Attempt, CompareConfig, Verdict, compare_attempts
from replaywatch.compare.structure import same
from replaywatch.compare.trajectory import MODES, trajectory
from replaywatch.exceptions import ConfigError


def call(tool: str, **args: Any) -> dict[str, Any]:
    return {"tool": tool, "args": args}


SEARCH, LOOKUP, REFUND, DELETE = (
    call("search", q="x"),
    call("lookup", id=1),
    call("refund", amount=120),
    call("delete_account", user="u"),
)
BASE = [SEARCH, LOOKUP, REFUND]
CASES = [  # (current, passes in strict, unordered, subset, superset)
    (BASE, (True, True, True, True)),
    ([LOOKUP, SEARCH, REFUND], (False, True, True, True)),  # reordered
    ([SEARCH, REFUND], (False, False, True, False)),  # a call skipped
    ([SEARCH, LOOKUP, REFUND, SEARCH], (False, False, False, True)),  # a call repeated
    ([SEARCH, LOOKUP, REFUND, DELETE], (False, False, False, True)),  # a new tool
    ([SEARCH, LOOKUP, call("refund", amount=1200)], (False, False, False, False)),  # other arguments
    ([SEARCH, LOOKUP, call("refund", amount=120.0)], (True, True, True, True)),  # 120 == 120.0
]


@pytest.mark.parametrize(("current", "passes"), CASES)
def test_each_mode_on_a_table_of_trajectories(current: list[Any], passes: tuple[bool, ...]) -> None:
    got = tuple(trajectory(BASE, current, mode, same(BASE, current)).passed for mode in MODES)  # type: ignore[arg-type]
    assert got == passes


calls = st.lists(st.sampled_from([SEARCH, LOOKUP, REFUND, DELETE, call("search", q="y")]), max_size=6)


@given(calls, calls)
def test_strict_implies_unordered_implies_subset_and_superset(recorded: list[Any], current: list[Any]) -> None:
    by_mode = {m: trajectory(recorded, current, m, same(recorded, current)) for m in MODES}  # type: ignore[arg-type]
    assert not by_mode["strict"].passed or by_mode["unordered"].passed
    assert by_mode["unordered"].passed == (by_mode["subset"].passed and by_mode["superset"].passed)
    t = by_mode["strict"]
    assert 0 <= t.precision <= 1 and 0 <= t.recall <= 1 and 0 <= t.f1 <= 1
    assert by_mode["subset"].passed == (t.precision == 1) and by_mode["superset"].passed == (t.recall == 1)


def test_precision_recall_f1_and_added_tools() -> None:
    t = trajectory(BASE, [SEARCH, DELETE, DELETE], "superset", False)
    assert t.precision == pytest.approx(1 / 3) and t.recall == pytest.approx(1 / 3) and t.f1 == pytest.approx(1 / 3)
    assert t.added_tools == ("delete_account",) and not t.passed
    assert trajectory([], [], "strict", True).f1 == 1.0


def test_the_engine_under_each_mode() -> None:
    base = Attempt("r", "s", 1, {"a": 1}, BASE)
    for mode, current, verdict in [
        ("strict", [LOOKUP, SEARCH, REFUND], Verdict.TOOL_EVENT_DIVERGENCE),
        ("unordered", [LOOKUP, SEARCH, REFUND], Verdict.WITHIN_TOLERANCE),
        ("superset", [*BASE, DELETE], Verdict.WITHIN_TOLERANCE),
        ("subset", [SEARCH], Verdict.WITHIN_TOLERANCE),
        ("unordered", [SEARCH, REFUND], Verdict.TOOL_EVENT_DIVERGENCE),
    ]:
        c = compare_attempts(base, Attempt("r", "s", 2, {"a": 1}, current), CompareConfig(tool_mode=mode))  # type: ignore[arg-type]
        assert c.verdict is verdict, (mode, current)
    added = compare_attempts(base, Attempt("r", "s", 2, {"a": 1}, [*BASE, DELETE]), CompareConfig(tool_mode="superset"))
    assert added.tools.added_tools == ("delete_account",)  # allowed by the mode, and named all the same
    with pytest.raises(ConfigError, match="tool mode"):
        CompareConfig(tool_mode="loose")  # type: ignore[arg-type]


def test_comparators_per_argument_path_decide_whether_two_calls_match() -> None:
    from replaywatch.compare.comparators import Comparator
    from replaywatch.compare.graded import PathComparators

    rules = PathComparators.compile([
        ("tool_events[*].args.amount", Comparator("number", rel_tol=0.01)),
        ("tool_events[*].args.note", Comparator("ignore")),
    ])  # fmt: skip
    assert rules.calls is not None and not rules  # nothing for the output snapshot
    base = [SEARCH, call("refund", amount=120, note="first try")]
    close = [call("refund", amount=120.5, note="again"), SEARCH]
    far = [call("refund", amount=1200, note="again"), SEARCH]
    assert trajectory(base, close, "unordered", False, rules.calls).passed
    assert not trajectory(base, far, "unordered", False, rules.calls).passed
    assert trajectory(base, list(reversed(close)), "strict", False, rules.calls).passed
    assert trajectory(base, far, "superset", False, rules.calls).recall == 0.5
    config = CompareConfig(tool_mode="unordered", comparators=rules)
    got = compare_attempts(Attempt("r", "s", 1, {"a": 1}, base), Attempt("r", "s", 2, {"a": 1}, close), config)
    assert got.verdict is Verdict.WITHIN_TOLERANCE and got.tools.precision == 1.0
