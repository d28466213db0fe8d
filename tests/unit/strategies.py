"""Hypothesis strategies for JSON documents and attempts."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from replaywatch.compare.attestations import ATTESTATION_KEY
from replaywatch.compare.usage import PRESETS

KEYS = st.sampled_from(["a", "b", "c", "tokens", "cost", "total_cost", "token_count", "msg", "trace", "id"])

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=5),
)

json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(KEYS, children, max_size=4),
    ),
    max_leaves=12,
)

snapshots = st.dictionaries(KEYS, json_values, max_size=5)

USAGE_KEYS = sorted({k for p in PRESETS.values() for k in p.strip} | {"id", "a", "usage", "text", ATTESTATION_KEY})
"""Every usage key of every preset, and a few others: keys that the walks treat apart."""


def ignore_paths(heads: tuple[str, ...] = ("output_snapshot", "**")) -> st.SearchStrategy[str]:
    """Ignore paths over ``documents``' keys, starting with one of ``heads``."""
    segments = st.one_of(st.sampled_from(USAGE_KEYS), st.sampled_from(("*", "**", "[*]", "[0]", "[1]")))
    return st.builds(lambda head, rest: ".".join([head, *rest]).replace(".[", "["),
                     st.sampled_from(heads), st.lists(segments, min_size=1, max_size=4))  # fmt: skip


documents = st.recursive(
    scalars | st.integers(0, 10**6),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(USAGE_KEYS), inner, max_size=5),
    max_leaves=30,
)
"""Documents whose keys are usage keys (and a few others) at any depth."""


def same(a: Any, b: Any) -> bool:
    """Equal with the types (``True`` is not ``1``) and the objects' key order; an
    explicit stack, for documents at the contract's depth."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if type(x) is not type(y):
            return False
        if isinstance(x, dict):
            if list(x) != list(y):
                return False
            stack.extend((x[k], y[k]) for k in x)
        elif isinstance(x, list):
            if len(x) != len(y):
                return False
            stack.extend(zip(x, y, strict=True))
        elif not (bool(x == y) or (x != x and y != y)):
            return False
    return True
