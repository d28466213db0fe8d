"""Usage numbers (tokens, cost) and the tolerance rule, as the reference executor has them."""

from __future__ import annotations

from typing import Final

from replaywatch.compare.canonical import Json

TOKEN_KEYS: Final = ("tokens", "token_count", "total_tokens")
COST_KEYS: Final = ("cost", "cost_usd", "total_cost")
USAGE_KEYS: Final = frozenset(TOKEN_KEYS + COST_KEYS)


def as_number(value: Json) -> float | None:
    """A JSON number as float; None for anything else (booleans are not numbers)."""
    t = type(value)
    if t is float:
        return value  # type: ignore[no-any-return]
    if t is int:
        try:
            return float(value)
        except OverflowError:  # wider than a double: not a usable number
            return None
    return None


def find_number(value: Json, keys: tuple[str, ...]) -> float | None:
    """The first numeric value under one of ``keys``, searched depth-first.

    In each object its own keys are looked at first, in the order of ``keys``; only
    then are its values searched, in document order. Arrays are searched item by item.
    A non-numeric value under a key is passed over and the search goes on. An explicit
    stack, so any depth the contract accepts is searched.
    """
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key in keys:
                if key in node:
                    num = as_number(node[key])
                    if num is not None:
                        return num
            children = list(node.values())
        elif isinstance(node, list):
            children = node
        else:
            continue
        stack.extend(c for c in reversed(children) if isinstance(c, (dict, list)))
    return None


def delta(baseline: float | None, current: float | None) -> float | None:
    """current - baseline, only when both are known."""
    if baseline is None or current is None:
        return None
    return current - baseline


def within_tolerance(d: float | None, baseline: float | None, tolerance: float) -> bool:
    """Relative to a non-zero baseline value, absolute against 0; no delta is within."""
    if d is None or baseline is None:
        return True
    if baseline != 0:
        return abs(d / baseline) <= tolerance
    return abs(d) <= tolerance
