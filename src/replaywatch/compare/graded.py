"""The graded structure comparison: each path that differs, scored by its comparator.

A policy maps paths (the ignore rules' syntax, ``compare.ignore``) to comparators
(``compare.comparators``). The walk goes down both documents together, with an explicit
stack (any depth the contract accepts) and linear in their size; at each node the
comparator is the one of the most specific path that matches the node, else the one its
parent had, else ``exact``:

- the most specific path has the most literal segments (``name``, ``[3]``), then the
  fewest ``**``, then the fewest ``*`` and ``[*]``; on a tie, the path written first;
- ``set`` compares the list at its node whole; ``ignore`` drops the subtree; ``text``,
  ``semantic`` and ``number`` compare the values below their node one by one, as does
  ``exact``.

It returns a ``PathResult`` for every path whose values differ (a key or an item that
only one side has included), with its comparator, score, threshold and whether it
passed. The structure passes when every path passes; its score is the lowest of the
paths' (1 when nothing differs), so the path that decided is never averaged away.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from replaywatch.compare import budget, ignore
from replaywatch.compare.canonical import Json
from replaywatch.compare.comparators import EXACT, Comparator, Score
from replaywatch.compare.structure import escape_token

_CONTAINERS: Final = (dict, list)


class PathResult(NamedTuple):
    """One path whose values differ, and what its comparator said."""

    path: str
    """An RFC 6901 JSON Pointer into the output snapshot."""
    comparator: str
    score: float
    rule: str
    """What passes, in words (``threshold 0.8``, ``abs 0.05, rel 0``, ``equal``)."""
    passed: bool
    detail: dict[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        out = {"path": self.path, "comparator": self.comparator, "score": round(self.score, 6),
               "rule": self.rule, "passed": self.passed}  # fmt: skip
        if self.detail:
            out["detail"] = self.detail
        return out


def _specificity(pattern: ignore.Pattern, order: int) -> tuple[int, int, int, int]:
    literal = sum(1 for kind, _ in pattern if kind in (ignore.KEY, ignore.INDEX))
    deep = sum(1 for kind, _ in pattern if kind == ignore.DEEP)
    wild = sum(1 for kind, _ in pattern if kind in (ignore.ANY_KEY, ignore.ANY_ITEM))
    return (literal, -deep, -wild, -order)


@dataclass(frozen=True, slots=True)
class PathComparators:
    """Comparators by path, compiled for the output snapshot."""

    paths: tuple[str, ...] = ()
    comparators: tuple[Comparator, ...] = ()
    output: tuple[ignore.Pattern, ...] = ()
    output_comparators: tuple[Comparator, ...] = ()
    output_rank: tuple[tuple[int, int, int, int], ...] = ()
    calls: PathComparators | None = None
    """The comparators of ``tool_events`` paths, relative to one call (``[*]`` or ``[N]``
    dropped): how two calls' arguments and results match (``trajectory``)."""

    @classmethod
    def compile(cls, items: dict[str, Comparator] | list[tuple[str, Comparator]]) -> PathComparators:
        """From (path, comparator) in the policy's order. Raises IgnorePathError for a path
        that breaks the syntax."""
        pairs = list(items.items()) if isinstance(items, dict) else list(items)
        output: list[ignore.Pattern] = []
        comps: list[Comparator] = []
        rank: list[tuple[int, int, int, int]] = []
        calls: list[tuple[str, Comparator]] = []
        for order, (path, comparator) in enumerate(pairs):
            tokens = ignore.parse_path(path)
            kind, head = tokens[0]
            if kind == ignore.DEEP:
                pattern = tokens
            elif head == "output_snapshot":
                pattern = tokens[1:]
            else:  # tool events: how one call matches another (the trajectory's argument matching)
                rest = tokens[2:] if tokens[1][0] in (ignore.ANY_ITEM, ignore.INDEX) else tokens[1:]
                if rest:
                    calls.append((_unparse(rest), comparator))
                continue
            output.append(pattern)
            comps.append(comparator)
            rank.append(_specificity(pattern, order))
        return cls(tuple(p for p, _ in pairs), tuple(c for _, c in pairs), tuple(output), tuple(comps), tuple(rank),
                   cls.compile([("output_snapshot." + p, c) for p, c in calls]) if calls else None)  # fmt: skip

    def __bool__(self) -> bool:
        return bool(self.output)

    def describe(self) -> list[dict[str, Any]]:
        return [{"path": p, **c.describe()} for p, c in zip(self.paths, self.comparators, strict=True)]

    def pick(self, matched: int) -> Comparator:
        """The comparator of the most specific pattern in the ``matched`` mask."""
        best = max((p for p in range(len(self.output)) if matched >> p & 1), key=lambda p: self.output_rank[p])
        return self.output_comparators[best]


def graded(recorded: Json, current: Json, rules: PathComparators) -> list[PathResult]:
    """Every path of the output structures that differs, scored (see the module)."""
    charge = budget.current.spend
    automaton = ignore.matcher(rules.output, through=True)
    results: list[PathResult] = []
    # (recorded, current, pointer, state for the subtree or -1, the comparator in force)
    stack: list[tuple[Json, Json, str, int, Comparator]] = [(recorded, current, "", automaton.start, EXACT)]
    while stack:
        a, b, path, states, comparator = stack.pop()
        if comparator.kind == "ignore":
            continue
        ta, tb = type(a), type(b)
        descend = (ta is dict and tb is dict) or (ta is list and tb is list and comparator.kind != "set")
        if not descend:
            score = comparator(a, b)
            if score.score < 1.0 or not score.passed:
                results.append(_result(path, comparator, score))
            continue
        charge(len(a) + len(b))
        if ta is dict:
            children: list[Any] = sorted(a.keys() | b.keys())
        else:
            children = list(range(max(len(a), len(b))))
        for slot in reversed(children):
            child = comparator
            sub = -1
            if states >= 0:
                # deeper paths may still name a more specific comparator: the walk goes on
                done, sub = automaton.key(states, slot) if ta is dict else automaton.item(states, slot)
                if done:
                    child = rules.pick(done)
            pointer = f"{path}/{escape_token(str(slot))}"
            in_a = slot in a if ta is dict else slot < len(a)
            in_b = slot in b if ta is dict else slot < len(b)
            if in_a and in_b:
                stack.append((a[slot], b[slot], pointer, sub, child))
            elif child.kind != "ignore":
                side = "added" if in_b else "removed"
                value = b[slot] if in_b else a[slot]
                results.append(PathResult(pointer, child.kind, 0.0, child.rule, False, {side: value}))
    results.sort(key=lambda r: r.path)
    return results


def _unparse(tokens: ignore.Pattern) -> str:
    """Tokens back into a path (``parse_path``'s inverse, for the paths below a call)."""
    out = ""
    for kind, arg in tokens:
        if kind == ignore.KEY:
            part = f'["{arg}"]' if any(ch in str(arg) for ch in '.[]"*') else str(arg)
        else:
            part = {ignore.ANY_KEY: "*", ignore.DEEP: "**", ignore.ANY_ITEM: "[*]"}.get(kind, f"[{arg}]")
        out += part if not out or part.startswith("[") else f".{part}"
    return out


def _result(path: str, comparator: Comparator, score: Score) -> PathResult:
    return PathResult(path, comparator.kind, score.score, comparator.rule, score.passed, score.detail)


def structure_score(results: list[PathResult]) -> float:
    """The lowest score of the paths that differ (1 when none does)."""
    return min((r.score for r in results), default=1.0)
