"""What a comparison shows of how two attempts of one step differ, path by path,
whatever the policy's comparators: what an envelope learns from, and what it judges.

Each path where the compared documents differ (usage numbers out, ignore rules applied)
is observed with its kind and figure:

- ``text``: strings of several words, scored by the policy's comparator for the path
  when it is ``text``, ``words`` or ``semantic``, else as ``words`` scores them
  (token-set similarity, case and whitespace folded, in [0, 1]);
- ``token``: other strings (ids, clocks, enums): changed or not;
- ``number``: the relative delta, ``|new - old| / |old|``;
- ``list``: a list of scalars in another order or with other repeats (the same set);
  ``set``: one whose set changed (scored by Jaccard similarity);
- ``length``: a list of objects or lists with another length (its items are walked);
- ``type``: a value of another type (or a boolean or null that changed);
- ``added`` / ``removed``: a key only one side has.

List indices are written ``*`` (``/choices/*/message/content``): what is learned is
the shape of a step kind, not of one document. Tool calls are matched by tool name
before they are walked, under ``/tool_events/*``. Pure.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Final, NamedTuple

from replaywatch.compare import budget
from replaywatch.compare.canonical import Json, canonical_bytes, parse_json
from replaywatch.compare.comparators import Comparator, words_similarity
from replaywatch.compare.engine import PreparedAttempt
from replaywatch.compare.graded import PathComparators
from replaywatch.compare.ignore import matcher
from replaywatch.compare.structure import escape_token
from replaywatch.compare.tool_changes import tool_name

TOOLS: Final = "/tool_events"
MAX_PATHS: Final = 256
"""Paths observed in one comparison at most: the rest are counted under ``OTHER``."""
OTHER: Final = "(other paths)"


class PathChange(NamedTuple):
    path: str
    kind: str
    figure: float | None = None
    """``text`` and ``set``: the similarity; ``number``: the relative delta."""


class Observation(NamedTuple):
    paths: tuple[PathChange, ...]
    tokens: float | None
    cost: float | None
    latency: float | None
    """Relative deltas of the usage numbers, when both attempts give them."""
    tools_before: frozenset[str]
    tools_now: frozenset[str]

    @property
    def differs(self) -> bool:
        return bool(self.paths) or self.tools_before != self.tools_now


def relative(old: float | None, new: float | None) -> float | None:
    """``|new - old| / |old|`` (0 when both are 0, infinite from 0); None if unknown."""
    if old is None or new is None or not (math.isfinite(old) and math.isfinite(new)):
        return None
    if new == old:
        return 0.0
    return math.inf if old == 0 else abs(new - old) / abs(old)


_SCALARS: Final = (str, int, float, bool, type(None))


def _scalar_list(items: list[Any]) -> bool:
    return all(type(v) in _SCALARS for v in items)


def _set_of(items: list[Any]) -> set[bytes]:
    return {canonical_bytes(v) for v in items}


def _leaf(path: str, a: Json, b: Json, comparator: Comparator | None) -> PathChange | None:
    ta, tb = type(a), type(b)
    if ta is str and tb is str:
        if a == b:
            return None
        if " " in a.strip() or " " in b.strip():
            if comparator is not None and comparator.kind in SCORED:  # the policy's own score
                return PathChange(path, "text", comparator(a, b).score)
            return PathChange(path, "text", words_similarity(a, b))
        return PathChange(path, "token")
    if ta in (int, float) and tb in (int, float):
        if a == b:
            return None
        return PathChange(path, "number", relative(float(a), float(b)))
    if ta is list and tb is list:  # lists of scalars
        if a == b and [type(v) for v in a] == [type(v) for v in b]:
            return None
        sa, sb = _set_of(a), _set_of(b)
        if sa == sb:
            return PathChange(path, "list", 1.0)
        return PathChange(path, "set", len(sa & sb) / len(sa | sb))
    if ta is tb and a == b:
        return None
    return PathChange(path, "type")


def _token(key: str) -> str:
    return key if "~" not in key and "/" not in key else escape_token(key)


_MISSING: Final = object()
SCORED: Final = frozenset({"text", "words", "semantic"})
"""Comparators whose score of two texts an envelope learns instead of its own."""


def walk(recorded: Json, current: Json, root: str = "", comparators: PathComparators | None = None) -> list[PathChange]:
    """Every path where two documents differ (see the module), sorted by path. With the
    policy's ``comparators``, a text under a ``text``, ``words`` or ``semantic``
    comparator is scored by it (the most specific path's, as ``compare.graded`` finds it)."""
    charge = budget.current.spend
    out: dict[str, PathChange] = {}
    automaton = matcher(comparators.output, through=True) if comparators else None
    stack: list[tuple[Json, Json, str, int, Comparator | None]] = [
        (recorded, current, root, automaton.start if automaton else -1, None)
    ]
    while stack:
        a, b, path, state, comparator = stack.pop()
        ta, tb = type(a), type(b)
        if ta is dict and tb is dict:
            charge(len(a) + len(b))
            for key, x in a.items():
                y = b.get(key, _MISSING)
                if y is _MISSING:
                    child = f"{path}/{_token(key)}"
                    out.setdefault(child, PathChange(child, "removed"))
                elif type(x) is not type(y) or x != y:  # most of two re-runs is the same: not walked
                    sub, inner = -1, comparator
                    if state >= 0 and automaton is not None and comparators is not None:
                        done, sub = automaton.key(state, key)
                        inner = comparators.pick(done) if done else comparator
                    stack.append((x, y, f"{path}/{_token(key)}", sub, inner))
            if len(b) > len(a) or any(key not in a for key in b):
                for key in b:
                    if key not in a:
                        child = f"{path}/{_token(key)}"
                        out.setdefault(child, PathChange(child, "added"))
            continue
        if ta is list and tb is list and not (_scalar_list(a) and _scalar_list(b)):
            charge(len(a) + len(b))
            if len(a) != len(b):
                out.setdefault(path, PathChange(path, "length"))
            child = f"{path}/*"
            for i, (x, y) in enumerate(zip(a, b, strict=False)):
                if type(x) is not type(y) or x != y:
                    sub, inner = -1, comparator
                    if state >= 0 and automaton is not None and comparators is not None:
                        done, sub = automaton.item(state, i)
                        inner = comparators.pick(done) if done else comparator
                    stack.append((x, y, child, sub, inner))
            continue
        change = _leaf(path, a, b, comparator)
        if change is not None and change.path not in out:
            out[change.path] = change
    if len(out) > MAX_PATHS:
        kept = sorted(out)[:MAX_PATHS]
        return [out[p] for p in kept] + [PathChange(OTHER, "type")]
    return [out[p] for p in sorted(out)]


def _by_tool(calls: Json) -> tuple[list[Json], frozenset[str]]:
    if type(calls) is not list:
        return [], frozenset()
    names = [tool_name(c) for c in calls]
    return list(calls), frozenset(n for n in names if n is not None)


@lru_cache(maxsize=4096)
def _tool_names(tool_fp: bytes) -> frozenset[str]:
    """The tools the calls of ``tool_fp`` name: parsed once per distinct calls (most
    comparisons find the same calls on both sides, and a step's baseline is compared
    again and again)."""
    return _by_tool(parse_json(tool_fp))[1]


def _aligned(before: list[Json], now: list[Json]) -> tuple[list[Json], list[Json]]:
    """The calls of each side paired by tool name, in order (each with the first unused
    call of the same tool): what differs in a call is walked, not its position."""
    used: set[int] = set()
    left: list[Json] = []
    right: list[Json] = []
    for call in before:
        name = tool_name(call)
        for j, other in enumerate(now):
            if j not in used and tool_name(other) == name:
                used.add(j)
                left.append(call)
                right.append(other)
                break
    return left, right


def observe(
    baseline: PreparedAttempt, current: PreparedAttempt, comparators: PathComparators | None = None
) -> Observation:
    """How ``current`` differs from ``baseline`` (see the module); texts under the
    policy's text comparators are scored by them. Pure."""
    paths: list[PathChange] = []
    if baseline.structure_fp != current.structure_fp:
        paths = walk(parse_json(baseline.structure_fp), parse_json(current.structure_fp), "", comparators)
    before: frozenset[str] = frozenset()
    now: frozenset[str] = frozenset()
    if baseline.tool_fp != current.tool_fp:
        calls_before, before = _by_tool(None if baseline.tool_fp is None else parse_json(baseline.tool_fp))
        calls_now, now = _by_tool(None if current.tool_fp is None else parse_json(current.tool_fp))
        left, right = _aligned(calls_before, calls_now)
        paths += walk(left, right, TOOLS)
    elif baseline.tool_fp is not None:  # the same calls: the cohort still learns their names
        before = now = _tool_names(baseline.tool_fp)
    return Observation(
        tuple(paths),
        relative(baseline.tokens, current.tokens),
        relative(baseline.cost, current.cost),
        relative(baseline.latency_ms, current.latency_ms),
        before,
        now,
    )
