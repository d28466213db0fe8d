"""One walk for the usage keys and the ignore rules (``structure.strip_and_drop``) gives
what the two walks give one after the other, on any document, rule set and preset: the
structure, the usage numbers (found in ignored subtrees too) and the rules matched."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from replaywatch.compare import ignore
from replaywatch.compare.attestations import ATTESTATION_KEY
from replaywatch.compare.structure import drop_ignored, strip_and_drop, strip_usage
from replaywatch.compare.usage import PRESETS
from tests.unit.strategies import scalars

USAGE_KEYS = sorted({k for p in PRESETS.values() for k in p.strip} | {"id", "a", "usage", "text", ATTESTATION_KEY})
segments = st.one_of(st.sampled_from(USAGE_KEYS), st.sampled_from(("*", "**", "[*]", "[0]", "[1]")))
paths = st.builds(lambda head, rest: ".".join([head, *rest]).replace(".[", "["),
                  st.sampled_from(("output_snapshot", "**")), st.lists(segments, min_size=1, max_size=4))  # fmt: skip
documents = st.recursive(
    scalars | st.integers(0, 10**6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(USAGE_KEYS), inner, max_size=5),
    max_leaves=30,
)


def same(a: Any, b: Any) -> bool:
    """Equal with the types (``True`` is not ``1``)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) or (a != a and b != b)


@settings(max_examples=1000, deadline=None)
@given(doc=documents, rules=st.lists(paths, min_size=1, max_size=4), preset=st.sampled_from(sorted(PRESETS)))
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
