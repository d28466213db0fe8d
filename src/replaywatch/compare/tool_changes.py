"""Tool-event changes by kind: what turned the recorded tool events into the current ones.

The reference only says whether the tool events are equal. When they are not, the
on-call engineer needs to know how they differ, so the tool diff classifies each
change between the two lists (as compared: ignore rules applied):

- ``moved``: an event equal to a recorded one, at another position (the events kept
  in place are the longest run of equal events in the same order; any other equal
  event moved);
- ``changed``: at the same position, the same tool, with other arguments or result;
  with the RFC 6902 JSON Patch from the recorded event to the current one. "The same
  position" is the same place between the events that stayed: with an event inserted
  before it, a changed event is still the same call (``from`` and ``to`` differ);
- ``removed``: a recorded event with no counterpart now;
- ``added``: a current event with no recorded counterpart.

Tool events that are not a list count as one event (absent: none), so that an object
that becomes a list still reads as changes. ``apply_changes`` turns the recorded
events into the current ones with the changes alone (the property the tests check).
Pure, and linear in the events but for one sort: only divergent attempts pay for it.
"""

from __future__ import annotations

import bisect
from collections import deque
from typing import Any, Final, NamedTuple

from replaywatch.compare import budget
from replaywatch.compare.canonical import Json, canonical_bytes
from replaywatch.compare.structure import json_patch

KINDS: Final = ("added", "removed", "moved", "changed")
TOOL_NAME_KEYS: Final = ("tool", "tool_name", "name")
"""Where an event names its tool; OpenAI's ``{"function": {"name": ...}}`` too."""


class ToolCounts(NamedTuple):
    """How many tool events were added, removed, moved and changed."""

    added: int = 0
    removed: int = 0
    moved: int = 0
    changed: int = 0


NO_CHANGES: Final = ToolCounts()


def as_events(value: Json) -> list[Json]:
    """Tool events as a list: a list is itself, null none, anything else one event."""
    if type(value) is list:
        return value
    return [] if value is None else [value]


def tool_name(event: Json) -> str | None:
    """The tool an event names, if it names one."""
    if type(event) is not dict:
        return None
    for key in TOOL_NAME_KEYS:
        name = event.get(key)
        if type(name) is str:
            return name
    function = event.get("function")
    if type(function) is dict and type(function.get("name")) is str:
        return function["name"]  # type: ignore[no-any-return]
    return None


def _normal(value: Json) -> Json:
    """The value with integral floats as ints, so that equal events (1 and 1.0) get equal
    keys; booleans stay booleans (``true`` is never ``1``). Explicit stack."""
    root: list[Json] = [value]
    stack: list[tuple[Json, Any, Any]] = [(value, root, 0)]
    charge = budget.current.spend
    while stack:
        node, parent, slot = stack.pop()
        t = type(node)
        if t is dict:
            charge(len(node) + 1)
            copy: dict[str, Any] = dict(node)
            parent[slot] = copy
            stack.extend((v, copy, k) for k, v in node.items() if type(v) in (dict, list, float))
        elif t is list:
            charge(len(node) + 1)
            items = list(node)
            parent[slot] = items
            stack.extend((v, items, i) for i, v in enumerate(node) if type(v) in (dict, list, float))
        elif t is float and node.is_integer() and abs(node) < 2**53:
            parent[slot] = int(node)
    return root[0]


def event_key(event: Json) -> bytes:
    """What makes two events equal as JSON (``1`` and ``1.0`` alike): their key."""
    return canonical_bytes(_normal(event))


def _longest_increasing(pairs: list[tuple[int, int]]) -> set[tuple[int, int]]:
    """The longest chain of (recorded, current) pairs increasing in both, pairs given in
    increasing current order (patience sorting; ties go to the earliest pairs)."""
    tails: list[int] = []  # recorded index ending the best chain of each length
    tail_at: list[int] = []  # the pair (its position in pairs) ending it
    back: list[int] = []
    for n, (i, _) in enumerate(pairs):
        length = bisect.bisect_left(tails, i)
        back.append(tail_at[length - 1] if length else -1)
        if length == len(tails):
            tails.append(i)
            tail_at.append(n)
        else:
            tails[length], tail_at[length] = i, n
    chain: set[tuple[int, int]] = set()
    n = tail_at[-1] if tail_at else -1
    while n >= 0:
        chain.add(pairs[n])
        n = back[n]
    return chain


def classify(recorded: Json, current: Json) -> list[dict[str, Any]]:
    """The changes from the recorded tool events to the current ones, in current order
    then recorded order: each a dict with ``kind`` and the positions it concerns
    (``from``: in the recorded events, ``to``: in the current ones)."""
    rec, cur = as_events(recorded), as_events(current)
    rec_keys, cur_keys = [event_key(e) for e in rec], [event_key(e) for e in cur]
    # 1. equal events: those in place first, then the others by order of occurrence
    queues: dict[bytes, deque[int]] = {}
    for i, k in enumerate(rec_keys):
        queues.setdefault(k, deque()).append(i)
    match: dict[int, int] = {j: j for j, k in enumerate(cur_keys) if j < len(rec) and rec_keys[j] == k}
    matched_rec = set(match)  # current -> recorded; the recorded events matched
    for j, k in enumerate(cur_keys):
        queue = queues.get(k)
        if j in match or not queue:
            continue
        while queue and queue[0] in matched_rec:
            queue.popleft()
        if queue:
            match[j] = queue.popleft()
            matched_rec.add(match[j])
    # 2. of those, the longest run in the same order stays; the others moved
    by_current = sorted(((i, j) for j, i in match.items()), key=lambda p: p[1])
    kept = _longest_increasing(by_current)
    changes: list[dict[str, Any]] = [
        {"kind": "moved", "from": i, "to": j, "tool": tool_name(rec[i])}
        for i, j in sorted(by_current)
        if (i, j) not in kept
    ]
    # 3. between two events that stayed, the others pair up by tool, in order: changed;
    #    the rest were removed or added
    removed, added = (
        [i for i in range(len(rec)) if i not in matched_rec],
        [j for j in range(len(cur)) if j not in match],
    )
    gaps: dict[int, tuple[list[int], list[int]]] = {}  # gap number -> (recorded, current)
    anchors_rec = sorted(i for i, _ in kept)
    anchors_cur = sorted(j for _, j in kept)
    for i in removed:
        gaps.setdefault(bisect.bisect_left(anchors_rec, i), ([], []))[0].append(i)
    for j in added:
        gaps.setdefault(bisect.bisect_left(anchors_cur, j), ([], []))[1].append(j)
    for gap_rec, gap_cur in gaps.values():
        waiting: dict[str | None, deque[int]] = {}  # the current events of the gap, by tool
        for j in gap_cur:
            waiting.setdefault(tool_name(cur[j]), deque()).append(j)
        for i in gap_rec:  # the k-th call of a tool in the gap pairs with its k-th call now
            name = tool_name(rec[i])
            if queue := waiting.get(name):
                j = queue.popleft()
                changes.append({"kind": "changed", "from": i, "to": j, "tool": name,
                                "patch": json_patch(rec[i], cur[j])})  # fmt: skip
                matched_rec.add(i)
                match[j] = i
    changes += [{"kind": "added", "to": j, "tool": tool_name(cur[j]), "event": cur[j]} for j in added if j not in match]
    changes += [
        {"kind": "removed", "from": i, "tool": tool_name(rec[i]), "event": rec[i]}
        for i in removed
        if i not in matched_rec
    ]
    return changes


def counts(changes: list[dict[str, Any]]) -> ToolCounts:
    """How many changes of each kind."""
    n = dict.fromkeys(KINDS, 0)
    for c in changes:
        n[c["kind"]] += 1
    return ToolCounts(**n)


def apply_changes(recorded: Json, changes: list[dict[str, Any]], patch: Any) -> list[Json]:
    """The current tool events, rebuilt from the recorded ones and ``changes`` alone.

    ``patch(document, operations)`` applies a JSON Patch (say ``jsonpatch.apply_patch``).
    Added, moved and changed events take their positions; the recorded events that
    stayed fill the other positions, in their order.
    """
    rec = as_events(recorded)
    gone = {c["from"] for c in changes if c["kind"] in ("removed", "moved", "changed")}
    added = sum(1 for c in changes if c["kind"] == "added")
    out: list[Json] = [None] * (len(rec) - sum(1 for c in changes if c["kind"] == "removed") + added)
    placed: set[int] = set()
    for c in changes:
        if c["kind"] == "moved":
            j, event = c["to"], rec[c["from"]]
        elif c["kind"] == "changed":
            j, event = c["to"], patch(rec[c["from"]], c["patch"])
        elif c["kind"] == "added":
            j, event = c["to"], c["event"]
        else:
            continue
        out[j] = event
        placed.add(j)
    stayed = iter(e for i, e in enumerate(rec) if i not in gone)
    for j in range(len(out)):
        if j not in placed:
            out[j] = next(stayed)
    return out


def describe(changes: list[dict[str, Any]]) -> list[str]:
    """The changes in words, one line each (``replaywatch compare --show-diff``)."""
    lines = []
    for c in changes:
        tool = f"tool {c['tool']!r}" if c.get("tool") is not None else "an event naming no tool"
        if c["kind"] == "moved":
            lines.append(f"moved: {tool} from position {c['from']} to {c['to']}")
        elif c["kind"] == "added":
            lines.append(f"added: {tool} at position {c['to']}")
        elif c["kind"] == "removed":
            lines.append(f"removed: {tool} from position {c['from']}")
        else:
            paths = ", ".join(op["path"] or "(the whole event)" for op in c["patch"]) or "(equal by value)"
            moved = "" if c["from"] == c["to"] else f" (was at {c['from']})"
            lines.append(f"changed: {tool} at position {c['to']}{moved}: {paths}")
    return lines
