"""One walk for the usage keys and the ignore rules (``structure.strip_and_drop``) gives
what the two walks give one after the other, on any document, rule set and preset: the
structure, the usage numbers (found in ignored subtrees too) and the rules matched."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from replaywatch.compare import ignore
from replaywatch.compare.structure import drop_ignored, strip_and_drop, strip_usage
from replaywatch.compare.usage import PRESETS
from tests.unit.strategies import documents, ignore_paths, same


@settings(max_examples=1000, deadline=None)
@given(doc=documents, rules=st.lists(ignore_paths(), min_size=1, max_size=4), preset=st.sampled_from(sorted(PRESETS)))
def test_one_walk_equals_the_two(doc: Any, rules: list[str], preset: str) -> None:
    usage = PRESETS[preset]
    patterns = ignore.IgnoreRules.compile(rules).output
    stripped, tokens, cost = strip_usage(doc, usage)
    want, want_matched = drop_ignored(stripped, patterns)
    got, got_tokens, got_cost, got_matched = strip_and_drop(doc, usage, patterns)
    assert same(got, want)
    assert (got_tokens, got_cost, got_matched) == (tokens, cost, want_matched)


def test_usage_inside_an_ignored_subtree_is_still_counted() -> None:
    doc = {"meta": {"usage": {"total_tokens": 120}}, "id": "x", "answer": 1}
    patterns = ignore.IgnoreRules.compile(["output_snapshot.meta", "**.id"]).output
    got, tokens, _, matched = strip_and_drop(doc, PRESETS["all"], patterns)
    assert got == {"answer": 1} and tokens == 120 and matched == 0b11
