"""Comparators and the graded structure comparison: each scorer on inputs of every JSON
type, at its thresholds' edges, symmetric where it should be; the precedence of paths;
and the engine's verdicts under a policy with comparators."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replaywatch.compare import Attempt, CompareConfig, Verdict, compare_attempts
from replaywatch.compare.canonical import MAX_DEPTH
from replaywatch.compare.comparators import Comparator, normalize_text
from replaywatch.compare.embeddings import embedding_model
from replaywatch.compare.graded import PathComparators, graded, structure_score
from replaywatch.compare.structure import same
from replaywatch.exceptions import ConfigError

from .strategies import json_values

TEXT = Comparator("text", 0.8)
NUMBER = Comparator("number", rel_tol=0.05)
SET = Comparator("set")
SEMANTIC = Comparator("semantic", 0.7, embed=embedding_model(None))
ALL = (Comparator(), TEXT, NUMBER, SET, SEMANTIC)


@settings(max_examples=300)
@given(json_values, json_values)
def test_every_comparator_takes_every_json_type_and_is_symmetric(a: Any, b: Any) -> None:
    for c in ALL:
        ab, ba = c(a, b), c(b, a)
        assert 0.0 <= ab.score <= 1.0 and ab.passed == ba.passed, c.kind
        assert abs(ab.score - ba.score) < 1e-9, c.kind
        assert c(a, a).passed and c(a, a).score == 1.0, c.kind  # a value is always itself


def test_text_folds_case_and_whitespace_and_passes_at_its_threshold() -> None:
    assert TEXT("  The Answer\n is 42 ", "the answer is 42").score == 1.0
    assert normalize_text("A\tB  C") == "a b c"
    # one edit in four characters: similarity 0.75
    assert Comparator("text", 0.75)("abcd", "abce").passed
    assert not Comparator("text", 0.76)("abcd", "abce").passed
    assert not TEXT("42", 42).passed  # a type change is a change


def test_numbers_pass_within_absolute_or_relative_tolerance() -> None:
    assert NUMBER(100, 105).passed and not Comparator("number", rel_tol=0.04)(100, 105).passed
    assert Comparator("number", abs_tol=0.02)(0.93, 0.91).passed
    assert not Comparator("number", abs_tol=0.01)(0.93, 0.91).passed
    assert NUMBER(1, 1.0).score == 1.0
    assert not NUMBER(True, 1).passed  # a boolean is never a number
    assert NUMBER(120.0, 1200.0).score == pytest.approx(0.1)


@given(st.lists(st.one_of(st.integers(-5, 5), st.text(max_size=3)), max_size=8), st.randoms())
def test_a_set_ignores_order_and_repeats(items: list[Any], rng: Any) -> None:
    shuffled = items + items[: len(items) // 2]
    rng.shuffle(shuffled)
    assert SET(items, shuffled).passed and SET(items, shuffled).score == 1.0


def test_a_set_names_what_was_added_and_removed() -> None:
    got = SET(["doc-1", "doc-2", "doc-3"], ["doc-3", "doc-1", "doc-9"])
    assert not got.passed and got.score == pytest.approx(2 / 4)
    assert got.detail == {"added": ["doc-9"], "removed": ["doc-2"]}
    assert SET([1, 2], [2.0, 1.0]).passed


def test_semantic_tells_a_paraphrase_from_a_refusal() -> None:
    answer = "The capital of France is Paris."
    assert SEMANTIC(answer, "Paris is the capital city of France.").passed
    assert not SEMANTIC(answer, "I'm sorry, but I can't help with that request.").passed
    assert not SEMANTIC(answer, "").passed


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ConfigError, match="threshold"):
        Comparator("text", 1.5)
    with pytest.raises(ConfigError, match="rel_tol"):
        Comparator("number", rel_tol=-1)
    with pytest.raises(ConfigError, match="unknown"):
        Comparator("fuzzy")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="needs a model"):
        Comparator("semantic")


def test_the_most_specific_path_wins() -> None:
    policy = PathComparators.compile([
        ("**.confidence", Comparator("number", abs_tol=0.05)),
        ("output_snapshot.result.confidence", Comparator()),  # more literal segments: wins here
        ("output_snapshot.*.score", Comparator("number", abs_tol=0.5)),
        ("output_snapshot.other.score", Comparator("number", abs_tol=0.01)),
    ])  # fmt: skip
    a = {"result": {"confidence": 0.93}, "meta": {"confidence": 0.93}, "x": {"score": 1.0}, "other": {"score": 1.0}}
    b = {"result": {"confidence": 0.91}, "meta": {"confidence": 0.91}, "x": {"score": 1.2}, "other": {"score": 1.2}}
    got = {r.path: (r.comparator, r.passed) for r in graded(a, b, policy)}
    assert got == {
        "/result/confidence": ("exact", False),
        "/meta/confidence": ("number", True),
        "/x/score": ("number", True),
        "/other/score": ("number", False),
    }


def test_a_tie_goes_to_the_path_written_first() -> None:
    first = PathComparators.compile([("output_snapshot.*", TEXT), ("output_snapshot.*", Comparator())])
    second = PathComparators.compile([("output_snapshot.*", Comparator()), ("output_snapshot.*", TEXT)])
    assert graded({"a": "Hello there"}, {"a": "hello  there!"}, first)[0].comparator == "text"
    assert graded({"a": "Hello there"}, {"a": "hello  there!"}, second)[0].comparator == "exact"


def test_a_comparator_on_a_container_applies_below_it_and_a_deeper_path_overrides() -> None:
    policy = PathComparators.compile([("output_snapshot.answer", TEXT), ("output_snapshot.answer.id", SET)])
    a = {"answer": {"text": "Paris is the capital", "note": ["x"], "id": [1, 2]}}
    b = {"answer": {"text": "paris is the capital.", "note": ["x", "y"], "id": [2, 1]}}
    got = {r.path: (r.comparator, r.passed) for r in graded(a, b, policy)}
    assert got == {"/answer/text": ("text", True), "/answer/note/1": ("text", False)}  # id: the same set


def test_ignored_paths_keys_only_one_side_has_and_the_score() -> None:
    policy = PathComparators.compile([("**.request_id", Comparator("ignore")), ("output_snapshot.sources", SET)])
    a = {"request_id": "r1", "sources": ["a", "b"], "gone": 1}
    b = {"request_id": "r2", "sources": ["b"], "new": 2}
    results = graded(a, b, policy)
    assert [(r.path, r.passed, r.detail) for r in results] == [
        ("/gone", False, {"removed": 1}),
        ("/new", False, {"added": 2}),
        ("/sources", False, {"added": [], "removed": ["a"]}),
    ]
    assert structure_score(results) == 0.0 and structure_score([]) == 1.0


@settings(max_examples=300)
@given(json_values, json_values)
def test_under_exact_comparators_only_equal_documents_pass(a: Any, b: Any) -> None:
    results = graded(a, b, PathComparators.compile([("**", Comparator())]))
    assert (results == []) == same(a, b)
    assert all(not r.passed for r in results)


def test_documents_at_the_contract_depth_are_graded() -> None:
    def deep(leaf: Any) -> Any:
        value: Any = {"answer": leaf}
        for _ in range(MAX_DEPTH - 2):
            value = {"k": value}
        return value

    (result,) = graded(deep("The cat sat."), deep("the cat sat"), PathComparators.compile([("**.answer", TEXT)]))
    assert result.passed and result.path.endswith("/k/answer") and result.path.count("/") == MAX_DEPTH - 1


def llm_config() -> CompareConfig:
    return CompareConfig(comparators=PathComparators.compile([
        ("output_snapshot.answer", SEMANTIC), ("**.confidence", Comparator("number", abs_tol=0.05)),
        ("output_snapshot.sources", SET),
    ]))  # fmt: skip


def test_a_reworded_answer_is_within_tolerance_and_a_refusal_drifts_naming_its_path() -> None:
    base = {"answer": "The capital of France is Paris.", "confidence": 0.93, "sources": ["wiki", "atlas"]}
    reworded = {"answer": "Paris is the capital city of France.", "confidence": 0.91, "sources": ["atlas", "wiki"]}
    refusal = base | {"answer": "I'm sorry, but I can't help with that request."}
    ok = compare_attempts(Attempt("r", "s", 1, base), Attempt("r", "s", 2, reworded), llm_config())
    assert ok.verdict is Verdict.WITHIN_TOLERANCE and ok.diff is None
    assert 0.7 < ok.structure_score < 1.0 and ok.deciding_paths == ()
    bad = compare_attempts(Attempt("r", "s", 1, base), Attempt("r", "s", 3, refusal), llm_config())
    assert bad.verdict is Verdict.DRIFT and bad.deciding_paths == ("/answer",)
    assert bad.structure_score < 0.3 and bad.diff is not None
    assert b'"paths":[{"comparator":"semantic","passed":false,"path":"/answer"' in bad.diff.body


def test_without_comparators_nothing_changes() -> None:
    got = compare_attempts(Attempt("r", "s", 1, {"a": "x"}), Attempt("r", "s", 2, {"a": "X"}), CompareConfig())
    assert got.verdict is Verdict.DRIFT and got.structure_score == 0.0 and got.paths == ()
    assert b'"paths"' not in got.diff.body  # type: ignore[union-attr]
    assert CompareConfig().fingerprint() != llm_config().fingerprint()
