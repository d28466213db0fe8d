"""The ignore rules' automaton (``ignore.Matcher``) moves exactly as the rules' state
sets do, on any document and any rule set, with or without walking on below a match;
its memory per state stays bounded whatever keys a record holds."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from replaywatch.compare import ignore
from replaywatch.compare.structure import drop_ignored

KEYS = ("id", "a", "b", "text", "meta")
segments = st.one_of(st.sampled_from(KEYS), st.sampled_from(("*", "**", "[*]", "[0]", "[1]")))
paths = st.builds(lambda head, rest: ".".join([head, *rest]).replace(".[", "["),
                  st.sampled_from(("output_snapshot", "**")), st.lists(segments, min_size=1, max_size=4))  # fmt: skip
documents = st.recursive(
    st.one_of(st.none(), st.integers(-3, 3), st.text(max_size=3)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
    max_leaves=25,
)


def walk_by_state_sets(doc: Any, patterns: tuple[ignore.Pattern, ...], through: bool) -> list[tuple[str, int]]:
    """(pointer, matched mask) of every node a walk reaches, by ``ignore.step``/``advance``."""
    out: list[tuple[str, int]] = []
    stack: list[tuple[Any, str, frozenset[ignore.State] | None]] = [(doc, "", ignore.initial(patterns))]
    while stack:
        node, where, states = stack.pop()
        if states is None or not isinstance(node, (dict, list)):
            continue
        children = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        slot: Any
        for slot, value in children:
            key, index = (slot, None) if isinstance(node, dict) else (None, slot)
            if through:
                full = ignore.advance(patterns, states, key, index)
                done = ignore.matched(patterns, full)
                on = frozenset(s for s in full if s[1] < len(patterns[s[0]])) or None
            else:
                done, on = ignore.step(patterns, states, key, index)
            out.append((f"{where}/{slot}", done))
            stack.append((value, f"{where}/{slot}", on))
    return sorted(out)


def walk_by_automaton(doc: Any, m: ignore.Matcher) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    stack: list[tuple[Any, str, int]] = [(doc, "", m.start)]
    while stack:
        node, where, state = stack.pop()
        if state < 0 or not isinstance(node, (dict, list)):
            continue
        children = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        slot: Any
        for slot, value in children:
            done, on = m.key(state, slot) if isinstance(node, dict) else m.item(state, slot)
            out.append((f"{where}/{slot}", done))
            stack.append((value, f"{where}/{slot}", on))
    return sorted(out)


@settings(max_examples=300, deadline=None)
@given(st.lists(paths, min_size=1, max_size=4), st.lists(documents, min_size=1, max_size=3), st.booleans())
def test_the_automaton_moves_as_the_state_sets_do(rules: list[str], docs: list[Any], through: bool) -> None:
    patterns = ignore.IgnoreRules.compile(rules).output
    m = ignore.Matcher(patterns, through)
    for doc in docs:  # one automaton across documents: what it remembers from one serves the next
        assert walk_by_automaton(doc, m) == walk_by_state_sets(doc, patterns, through)


def test_an_index_rule_tells_items_apart_and_any_item_does_not() -> None:
    rules = ignore.IgnoreRules.compile(["output_snapshot.list[1]", "output_snapshot.all[*].id"]).output
    assert drop_ignored({"list": [1, 2, 3], "all": [{"id": 1, "x": 1}, {"id": 2}]}, rules)[0] == {
        "list": [1, None, 3], "all": [{"x": 1}, {}]}  # fmt: skip


def test_a_record_with_many_keys_does_not_grow_the_automaton_past_its_bound() -> None:
    m = ignore.Matcher(ignore.IgnoreRules.compile(["**.id"]).output)
    doc = {f"k{i}": {"id": i, "v": i} for i in range(5 * ignore.Matcher.MOVES)}
    kept, mask = drop_ignored(doc, m.patterns)
    assert mask == 1 and all(v == {"v": i} for i, v in enumerate(kept.values()))
    m = ignore.matcher(m.patterns)
    assert all(len(moves) <= ignore.Matcher.MOVES for moves in m._keys)
