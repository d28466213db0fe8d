"""Ignore rules: the path syntax and what it leaves out."""

from __future__ import annotations

import pytest

from replaywatch.compare import Attempt, CompareConfig, Verdict, compare_attempts
from replaywatch.compare.ignore import IgnoreRules, parse_path
from replaywatch.compare.structure import output_structure, tool_structure
from replaywatch.exceptions import IgnorePathError


def out(doc: object, *paths: str) -> object:
    return output_structure(doc, IgnoreRules.compile(paths))


def test_exact_path() -> None:
    assert out({"meta": {"id": 1, "k": 2}}, "output_snapshot.meta.id") == {"meta": {"k": 2}}


def test_any_key_and_any_item() -> None:
    doc = {"a": {"x": {"t": 1, "u": 2}, "y": {"t": 3}}, "l": [{"t": 1, "v": 2}]}
    assert out(doc, "output_snapshot.a.*.t", "output_snapshot.l[*].t") == {
        "a": {"x": {"u": 2}, "y": {}},
        "l": [{"v": 2}],
    }


def test_index_item_becomes_null() -> None:
    assert out({"l": [1, 2, 3]}, "output_snapshot.l[1]") == {"l": [1, None, 3]}


def test_deep_matches_any_depth_including_zero() -> None:
    doc = {"timestamp": 1, "a": {"timestamp": 2, "b": [{"timestamp": 3, "c": 4}]}}
    assert out(doc, "**.timestamp") == {"a": {"b": [{"c": 4}]}}


def test_deep_in_the_middle() -> None:
    doc = {"a": {"x": {"id": 1}, "id": 2}, "id": 3}
    assert out(doc, "output_snapshot.a.**.id") == {"a": {"x": {}}, "id": 3}


def test_quoted_key() -> None:
    assert out({"a.b": 1, "a": {"b": 2}}, 'output_snapshot["a.b"]') == {"a": {"b": 2}}


def test_rules_apply_to_their_document_only() -> None:
    rules = IgnoreRules.compile(["tool_events[*].id"])
    assert output_structure([{"id": 1}], rules) == [{"id": 1}]
    assert tool_structure([{"id": 1}], rules) == [{}]


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "meta.id",
        "output_snapshot",
        "output_snapshot.",
        "output_snapshot..a",
        "tool_events[x]",
        "output_snapshot.a[",
        "output_snapshot.a.[1]x",
    ],
)
def test_bad_paths_say_what_is_wrong(bad: str) -> None:
    with pytest.raises(IgnorePathError, match="ignore path"):
        parse_path(bad)


def test_ignore_makes_live_ids_equal() -> None:
    a = Attempt("r", "s", 1, {"m": 1, "meta": {"request_id": "x", "at": "t1"}})
    b = Attempt("r", "s", 2, {"m": 1, "meta": {"request_id": "y", "at": "t2"}})
    assert compare_attempts(a, b, CompareConfig()).verdict is Verdict.DRIFT
    cfg = CompareConfig.build(ignore=["output_snapshot.meta.request_id", "**.at"])
    assert compare_attempts(a, b, cfg).verdict is Verdict.WITHIN_TOLERANCE
