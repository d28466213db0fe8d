"""Rule 3 (structure), and the JSON Patch of a structural change."""

from __future__ import annotations

import copy

import jsonpatch
from hypothesis import given
from hypothesis import strategies as st

from replaywatch.compare import Attempt, CompareConfig, DiffKind, Verdict, compare_attempts
from replaywatch.compare.ignore import IgnoreRules
from replaywatch.compare.structure import json_patch, output_structure, strip_usage
from replaywatch.compare.usage import COST_KEYS, TOKEN_KEYS, find_number

from .strategies import json_values, snapshots

NO_RULES = IgnoreRules()


def verdict_of(a: object, b: object) -> tuple[Verdict, bool]:
    r = compare_attempts(Attempt("r", "s", 1, a), Attempt("r", "s", 2, b), CompareConfig(1e9, 1e9))
    return r.verdict, r.structure_equal


def test_usage_keys_are_stripped_at_any_depth() -> None:
    doc = {"a": {"tokens": 5, "b": [{"cost_usd": 1, "c": 2}]}, "total_cost": 3}
    assert output_structure(doc, NO_RULES) == {"a": {"b": [{"c": 2}]}}


@given(snapshots)
def test_one_walk_finds_what_the_reference_search_finds(s: dict[str, object]) -> None:
    _, tokens, cost = strip_usage(s)
    assert tokens == find_number(s, TOKEN_KEYS)
    assert cost == find_number(s, COST_KEYS)


def test_key_order_does_not_matter() -> None:
    assert verdict_of({"a": 1, "b": {"x": 1, "y": 2}}, {"b": {"y": 2, "x": 1}, "a": 1}) == (
        Verdict.WITHIN_TOLERANCE,
        True,
    )


def test_array_order_matters() -> None:
    assert verdict_of({"a": [1, 2]}, {"a": [2, 1]}) == (Verdict.DRIFT, False)


def test_numbers_compare_by_value() -> None:
    assert verdict_of({"a": 1, "b": [2.0]}, {"a": 1.0, "b": [2]}) == (Verdict.WITHIN_TOLERANCE, True)


def test_booleans_are_not_numbers() -> None:
    assert verdict_of({"a": True}, {"a": 1}) == (Verdict.DRIFT, False)
    assert verdict_of({"a": False}, {"a": 0}) == (Verdict.DRIFT, False)


def test_empty_containers_are_not_null() -> None:
    assert verdict_of({"a": []}, {"a": {}}) == (Verdict.DRIFT, False)
    assert verdict_of({"a": []}, {"a": None}) == (Verdict.DRIFT, False)
    assert verdict_of({"a": []}, {"a": []}) == (Verdict.WITHIN_TOLERANCE, True)


def test_usage_only_change_is_not_structural() -> None:
    assert verdict_of({"m": "x", "tokens": 1}, {"m": "x", "tokens": 99, "cost": 5}) == (Verdict.WITHIN_TOLERANCE, True)


def test_structure_change_gives_a_json_patch_diff() -> None:
    rec = {"message": "a", "tokens": 1, "list": [1, 2, 3]}
    cur = {"message": "b", "tokens": 1, "list": [1], "new": {"k": True}}
    r = compare_attempts(Attempt("r", "s", 1, rec), Attempt("r", "s", 2, cur), CompareConfig())
    assert r.verdict is Verdict.DRIFT
    assert r.diff is not None and r.diff.kind is DiffKind.STRUCTURE
    patch = jsonpatch.JsonPatch(__import__("orjson").loads(r.diff.body)["patch"])
    assert patch.apply({"message": "a", "list": [1, 2, 3]}) == {"message": "b", "list": [1], "new": {"k": True}}


def test_token_drift_alone_has_no_diff() -> None:
    r = compare_attempts(Attempt("r", "s", 1, {"tokens": 1}), Attempt("r", "s", 2, {"tokens": 2}), CompareConfig())
    assert r.verdict is Verdict.DRIFT and r.structure_equal and r.diff is None


def test_json_patch_escapes_pointer_tokens() -> None:
    ops = json_patch({"a/b": 1, "c~d": 1}, {"a/b": 2, "c~d": 2})
    assert [op["path"] for op in ops] == ["/a~1b", "/c~0d"]


@given(json_values, json_values)
def test_json_patch_turns_recorded_into_current(a: object, b: object) -> None:
    ops = json_patch(a, b)
    if ops and ops[0]["path"] == "":
        # a whole-document replace: the patch library spells the root as ""
        assert ops == [{"op": "replace", "path": "", "value": b}]
        return
    assert jsonpatch.apply_patch(copy.deepcopy(a), ops) == b


@given(snapshots)
def test_structure_is_reflexive(s: dict[str, object]) -> None:
    assert verdict_of(s, copy.deepcopy(s))[1]


@given(snapshots, st.randoms())
def test_structure_ignores_key_order(s: dict[str, object], rnd: st.SearchStrategy) -> None:
    def shuffle(v: object) -> object:
        if isinstance(v, dict):
            items = list(v.items())
            rnd.shuffle(items)  # type: ignore[attr-defined]
            return {k: shuffle(x) for k, x in items}
        if isinstance(v, list):
            return [shuffle(x) for x in v]
        return v

    assert verdict_of(s, shuffle(s))[1]
