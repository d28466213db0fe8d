"""Tool-event changes by kind."""

from __future__ import annotations

import jsonpatch
import pytest
from hypothesis import given
from hypothesis import strategies as st

from replaywatch.compare import CompareConfig, Verdict, compare_attempts, parse_json
from replaywatch.compare.engine import Attempt
from replaywatch.compare.structure import same
from replaywatch.compare.tool_changes import ToolCounts, apply_changes, classify, counts, describe

# few tools and few arguments: equal events, moves and changes are common
events = st.fixed_dictionaries(
    {"tool": st.sampled_from(["search", "fetch", "write"])},
    optional={"args": st.dictionaries(st.sampled_from(["q", "n"]), st.integers(0, 2), max_size=2)},
)
tool_lists = st.lists(events, max_size=8)


def apply(recorded: object, changes: list[dict[str, object]]) -> list[object]:
    return apply_changes(recorded, changes, lambda doc, ops: jsonpatch.apply_patch(doc, ops))


@given(tool_lists, tool_lists)
def test_applying_the_changes_to_the_recorded_events_gives_the_current_ones(
    rec: list[object], cur: list[object]
) -> None:
    changes = classify(rec, cur)
    assert same(apply(rec, changes), cur)
    n = counts(changes)
    assert len(cur) == len(rec) - n.removed + n.added
    assert (n == ToolCounts()) == same(rec, cur)


@given(tool_lists, st.data())
def test_a_permutation_is_only_moves(rec: list[object], data: st.DataObject) -> None:
    cur = data.draw(st.permutations(rec))
    n = counts(classify(rec, cur))
    assert n.added == n.removed == n.changed == 0
    assert n.moved < max(len(rec), 1)  # the longest run in order stays


@given(st.lists(st.integers(0, 3), max_size=8) | st.none(), st.lists(st.integers(0, 3), max_size=8) | st.none())
def test_lists_of_anything_and_absence(rec: list[int] | None, cur: list[int] | None) -> None:
    assert same(apply(rec, classify(rec, cur)), cur or [])


S, F, W = {"tool": "search", "args": {"q": 1}}, {"tool": "fetch"}, {"tool": "write"}


@pytest.mark.parametrize(
    ("rec", "cur", "expected", "words"),
    [
        ([S, F], [S, F, W], ToolCounts(added=1), ["added: tool 'write' at position 2"]),
        ([S, F, W], [S, W], ToolCounts(removed=1), ["removed: tool 'fetch' from position 1"]),
        ([S, F, W], [F, W, S], ToolCounts(moved=1), ["moved: tool 'search' from position 0 to 2"]),
        ([S, F], [{"tool": "search", "args": {"q": 2}}, F], ToolCounts(changed=1),
         ["changed: tool 'search' at position 0: /args/q"]),
        ([S, F], [W, {"tool": "search", "args": {"q": 2}}, F], ToolCounts(added=1, changed=1),
         ["changed: tool 'search' at position 1 (was at 0): /args/q", "added: tool 'write' at position 0"]),
        ([S], [F], ToolCounts(added=1, removed=1),  # another tool at that position: not a change of arguments
         ["added: tool 'fetch' at position 0", "removed: tool 'search' from position 0"]),
        ({"tool": "search"}, [{"tool": "search"}, F], ToolCounts(added=1), ["added: tool 'fetch' at position 1"]),
    ],
)  # fmt: skip
def test_each_kind_in_numbers_and_words(rec: object, cur: object, expected: ToolCounts, words: list[str]) -> None:
    changes = classify(rec, cur)
    assert counts(changes) == expected
    assert describe(changes) == words


def test_numbers_equal_by_value_are_no_change() -> None:
    assert classify([{"tool": "a", "n": 1}], [{"n": 1.0, "tool": "a"}]) == []


def test_openai_tool_calls_name_their_function() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
    other = {**call, "function": {"name": "get_weather", "arguments": '{"city":"Lyon"}'}}
    assert describe(classify([call], [other])) == ["changed: tool 'get_weather' at position 0: /function/arguments"]


def test_the_comparison_and_its_diff_carry_the_changes() -> None:
    snap = {"status": "ok"}
    c = compare_attempts(
        Attempt("r", "s", 1, snap, tool_events=[S, F, {"tool": "write", "trace": "x"}]),
        Attempt("r", "s", 2, snap, tool_events=[F, S, {"tool": "write", "trace": "y"}]),
        CompareConfig.build(ignore=["tool_events[*].trace"]),
    )
    assert c.verdict is Verdict.TOOL_EVENT_DIVERGENCE
    assert c.tool_changes == ToolCounts(moved=1)  # ignored paths are no change
    assert c.diff is not None
    assert parse_json(c.diff.body)["changes"] == [{"kind": "moved", "from": 1, "to": 0, "tool": "fetch"}]
    assert c.summary()["tool_changes"] == {"added": 0, "removed": 0, "moved": 1, "changed": 0}


def test_equal_tool_events_have_no_changes() -> None:
    c = compare_attempts(Attempt("r", "s", 1, {}, tool_events=[S]), Attempt("r", "s", 2, {}, tool_events=[S]),
                         CompareConfig())  # fmt: skip
    assert c.tool_changes == ToolCounts() and c.tool_events_equal
