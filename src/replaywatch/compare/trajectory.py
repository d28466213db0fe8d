"""Tool trajectories: whether the current attempt's tool calls match the baseline's, by
the policy's mode, and how well (precision, recall, F1 of the calls).

Calls are the tool events as compared (ignore rules applied, so volatile arguments such
as call ids are already out). Two calls match when they are equal as JSON (``1`` and
``1.0`` alike). The modes, as agent evaluators name them:

- ``strict``: the same calls in the same order (replaywatch's rule before modes);
- ``unordered``: the same calls, in any order (each current call matched to a distinct
  baseline call, and none left over);
- ``subset``: every current call matches a baseline call (calls may be skipped);
- ``superset``: every baseline call is matched by a current call (calls may be added).

``strict`` ⇒ ``unordered`` ⇒ both ``subset`` and ``superset``; ``unordered`` is
``subset`` and ``superset`` together. Whatever the mode, the tools the current attempt
called that the baseline never called are named (``added_tools``): a new tool such as
``delete_account`` stands out in the event even where the mode lets calls be added.
Pure and linear in the calls but for one sort.
"""

from __future__ import annotations

from collections import Counter
from typing import Final, Literal, NamedTuple

from replaywatch.compare.canonical import Json
from replaywatch.compare.graded import PathComparators, graded
from replaywatch.compare.tool_changes import as_events, event_key, tool_name

Mode = Literal["strict", "unordered", "subset", "superset"]
MODES: Final[tuple[str, ...]] = ("strict", "unordered", "subset", "superset")


class Trajectory(NamedTuple):
    """How the current calls compare with the baseline's."""

    passed: bool
    precision: float
    """Of the current calls, the share that match a baseline call (1 with none)."""
    recall: float
    """Of the baseline calls, the share matched by a current call (1 with none)."""
    added_tools: tuple[str, ...]
    """Tools called now that the baseline never called, in the order first called."""

    @property
    def f1(self) -> float:
        total = self.precision + self.recall
        return 0.0 if total == 0 else 2 * self.precision * self.recall / total


SAME: Final = Trajectory(True, 1.0, 1.0, ())


def trajectory(
    recorded: Json, current: Json, mode: Mode, in_order: bool, calls: PathComparators | None = None
) -> Trajectory:
    """The trajectory of ``current`` against ``recorded`` under ``mode``. ``in_order``:
    whether the two are equal as lists (what ``strict`` asks), known to the caller.
    ``calls``: comparators for the paths of a call (``tool_events[*].args.amount`` as
    ``number``, say); two calls of one tool then match when every path passes."""
    rec, cur = as_events(recorded), as_events(current)
    if calls is None:
        matched = sum((Counter(event_key(e) for e in rec) & Counter(event_key(e) for e in cur)).values())
    else:
        matched = _paired(rec, cur, calls)
        in_order = in_order or (
            len(rec) == len(cur) and all(_match(a, b, calls) for a, b in zip(rec, cur, strict=True))
        )
    precision = matched / len(cur) if cur else 1.0
    recall = matched / len(rec) if rec else 1.0
    known = {tool_name(e) for e in rec}
    added = tuple(dict.fromkeys(n for e in cur if (n := tool_name(e)) is not None and n not in known))
    if mode == "strict":
        passed = in_order
    elif mode == "unordered":
        passed = matched == len(rec) == len(cur)
    elif mode == "subset":
        passed = matched == len(cur)
    else:
        passed = matched == len(rec)
    return Trajectory(passed, precision, recall, added)


def _match(a: Json, b: Json, calls: PathComparators) -> bool:
    return tool_name(a) == tool_name(b) and all(r.passed for r in graded(a, b, calls))


def _paired(rec: list[Json], cur: list[Json], calls: PathComparators) -> int:
    """How many current calls pair with a baseline call: each with the first unpaired
    baseline call of its tool that it matches under the comparators (quadratic in the
    calls of one tool only)."""
    free: dict[str | None, list[int]] = {}
    for i, e in enumerate(rec):
        free.setdefault(tool_name(e), []).append(i)
    matched = 0
    for e in cur:
        candidates = free.get(tool_name(e), [])
        hit = next((n for n, i in enumerate(candidates) if _match(rec[i], e, calls)), None)
        if hit is not None:
            candidates.pop(hit)
            matched += 1
    return matched
