"""The whole accepted range: documents nested up to the contract's 1,024 levels go
through every walk (canonical form, structure equality, JSON Patch, usage search,
ignore rules, tool events) without Python's recursion limit, and at any stack depth
the caller happens to be at."""

from __future__ import annotations

import sys
from typing import Any

import jsonpatch
import orjson
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from replaywatch.compare import Attempt, CompareConfig, DiffKind, Verdict, compare_attempts
from replaywatch.compare.canonical import MAX_DEPTH, _dumps_iteratively, canonical_bytes, compact_bytes, parse_json
from replaywatch.compare.structure import drop_ignored, json_patch, same, strip_usage
from replaywatch.compare.usage import TOKEN_KEYS, find_number
from replaywatch.exceptions import JsonTooDeep

from .strategies import json_values

NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)
"""Shrinking a 1,024-level example takes minutes and tells nothing the example does not."""


def nest(kinds: list[str], leaf: Any) -> Any:
    """A document whose spine has one container per entry of ``kinds`` ("d": an object
    under key "k" with a sibling, "l": an array holding a sibling then the child),
    built from the inside out (no recursion)."""
    value = leaf
    for kind in reversed(kinds):
        value = {"k": value, "s": 1} if kind == "d" else ["x", value]
    return value


def spine(depth: int) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from("dl"), min_size=depth, max_size=depth)


AT_LIMIT = spine(MAX_DEPTH - 1)  # the leaf container makes it MAX_DEPTH levels


def text_of(value: Any) -> str:
    return compact_bytes(value).decode()


@settings(max_examples=30, deadline=None, phases=NO_SHRINK)
@given(AT_LIMIT, st.integers(0, 10**6))
def test_canonical_form_at_the_limit_round_trips(kinds: list[str], n: int) -> None:
    doc = nest(kinds, {"z": n, "a": 1.5, "b": "é", "c": None, "d": True})  # 1,024 levels in all
    data = canonical_bytes(doc)
    assert canonical_bytes(parse_json(data)) == data  # the contract's parser takes it back, same bytes
    assert data.count(b"{") + data.count(b"[") == MAX_DEPTH


@settings(max_examples=200, deadline=None)
@given(spine(200), json_values, st.booleans())
def test_the_iterative_writer_gives_orjsons_bytes(kinds: list[str], leaf: Any, sort_keys: bool) -> None:
    """Below orjson's depth limit both writers run, and must agree byte for byte: a
    document gets the same content address whichever writer ran."""
    doc = nest(kinds, leaf)
    want = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS if sort_keys else 0)
    assert _dumps_iteratively(doc, sort_keys=sort_keys) == want


@settings(max_examples=30, deadline=None, phases=NO_SHRINK)
@given(AT_LIMIT, st.integers(0, 100))
def test_equality_at_the_limit(kinds: list[str], n: int) -> None:
    a = nest(kinds, {"n": n})
    assert same(a, parse_json(text_of(a)))
    assert not same(a, nest(kinds, {"n": n + 1}))
    assert same(a, nest(kinds, {"n": float(n)}))  # numbers by value
    assert not same(nest(kinds, {"n": True}), nest(kinds, {"n": 1}))  # true is not 1


@settings(max_examples=20, deadline=None, phases=NO_SHRINK)
@given(AT_LIMIT, st.integers(0, 100))
def test_patch_at_the_limit_turns_recorded_into_current(kinds: list[str], n: int) -> None:
    recorded, current = nest(kinds, {"n": n, "gone": 1}), nest(kinds, {"n": n + 1, "new": [1]})
    ops = json_patch(recorded, current)
    assert [op["op"] for op in ops] == ["remove", "replace", "add"]  # by sorted key: gone, n, new
    assert ops[0]["path"].count("/") == len(kinds) + 1
    patched = jsonpatch.JsonPatch(ops).apply(parse_json(text_of(recorded)), in_place=True)
    assert canonical_bytes(patched) == canonical_bytes(current)


@settings(max_examples=20, deadline=None, phases=NO_SHRINK)
@given(AT_LIMIT, st.integers(1, 10**6), st.sampled_from(TOKEN_KEYS))
def test_usage_found_and_stripped_at_the_bottom(kinds: list[str], tokens: int, key: str) -> None:
    doc = nest(kinds, {key: tokens, "cost_usd": 0.5, "keep": 1})
    stripped, found_tokens, cost = strip_usage(doc)
    assert (found_tokens, cost) == (tokens, 0.5)
    assert find_number(doc, TOKEN_KEYS) == tokens
    assert b"cost_usd" not in canonical_bytes(stripped) and b'"keep":1' in canonical_bytes(stripped)


@settings(max_examples=20, deadline=None, phases=NO_SHRINK)
@given(AT_LIMIT)
def test_ignore_rules_at_the_bottom(kinds: list[str]) -> None:
    from replaywatch.compare.ignore import IgnoreRules

    rules = IgnoreRules.compile(["**.span_id"])
    doc = nest(kinds, {"span_id": "abc", "keep": 1})
    out = canonical_bytes(drop_ignored(doc, rules.output)[0])
    assert b"span_id" not in out and b'"keep":1' in out


@pytest.mark.parametrize("where", ["output_snapshot", "tool_events"])
def test_two_attempts_at_the_limit_compare_at_any_stack_depth(where: str) -> None:
    kinds = ["d", "l"] * ((MAX_DEPTH - 1) // 2)
    recorded = nest(kinds, {"v": 1})
    current = nest(kinds, {"v": 2})
    base = {"answer": "ok", "tokens": 10}

    def attempt(n: int, value: Any) -> Attempt:
        if where == "output_snapshot":
            return Attempt("r", "s", n, parse_json(text_of({**base, "deep": value})))
        return Attempt("r", "s", n, base, parse_json(text_of(value)))

    def compare_near_the_recursion_limit(depth: int) -> Any:
        if depth:
            return compare_near_the_recursion_limit(depth - 1)
        return compare_attempts(attempt(1, recorded), attempt(2, current), CompareConfig())

    result = compare_near_the_recursion_limit(sys.getrecursionlimit() - 100)
    want = (
        (Verdict.DRIFT, DiffKind.STRUCTURE)
        if where == "output_snapshot"
        else (Verdict.TOOL_EVENT_DIVERGENCE, DiffKind.TOOL)
    )
    assert (result.verdict, result.diff.kind if result.diff else None) == want
    assert result.diff is not None and parse_json(result.diff.body)["run_id"] == "r"


def test_deeper_than_the_limit_is_refused_as_too_deep() -> None:
    with pytest.raises(JsonTooDeep, match="1024"):
        parse_json("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    assert parse_json("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None


@settings(max_examples=20, deadline=None, phases=NO_SHRINK)
@given(AT_LIMIT, st.booleans(), st.booleans())
def test_a_stored_attempt_at_the_limit_reads_back(kinds: list[str], with_tools: bool, deep_tools: bool) -> None:
    """The stored row wraps the snapshot in one more object: at 1,024 levels it is read
    part by part, and gives back the attempt as prepared (a restart or a cache eviction
    must not turn every later attempt of the step into a dead letter)."""
    from replaywatch.compare import ABSENT, prepare
    from replaywatch.store.postgres import _attempt_from, _attempt_json

    snapshot = nest(kinds, {"tool_events": 1, "v": "x"})  # the mark's key inside the snapshot too
    tools: Any = ABSENT
    if with_tools:
        tools = nest(kinds[1:], [{"tool": "search", "tool_events": 2}]) if deep_tools else [{"tool": "search"}]
    stored = prepare(3, snapshot, tools, CompareConfig())
    text = _attempt_json(stored)
    assert text is not None
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(text)  # one level too deep for the parser
    assert _attempt_from(text, CompareConfig()) == stored
