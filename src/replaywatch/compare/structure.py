"""Structure: a snapshot with its usage keys and ignored paths removed, and the JSON
Patch (RFC 6902) between two of them.

The patch generator is our own, small and deterministic on purpose: its output is
hashed into a content address, so it must not change with a library upgrade, and it
must tell ``true`` from ``1`` (Python's ``==`` does not).
"""

from __future__ import annotations

import math
from typing import Any

from replaywatch.compare import ignore
from replaywatch.compare.canonical import Json
from replaywatch.compare.usage import USAGE_KEYS

_NOTHING: frozenset[str] = frozenset()


def sanitize(
    value: Json,
    strip_keys: frozenset[str],
    patterns: tuple[ignore.Pattern, ...],
    states: frozenset[ignore.State] | None,
) -> Json:
    """Copy ``value`` without ``strip_keys`` (at any depth) and without ignored paths;
    integral floats become ints so that numbers compare by value."""
    t = type(value)
    if t is dict:
        out: dict[str, Any] = {}
        for k, v in value.items():
            if k in strip_keys:
                continue
            if states is None:
                sub = None
            else:
                dropped, sub = ignore.step(patterns, states, k, None)
                if dropped:
                    continue
            tv = type(v)
            if tv is dict or tv is list or tv is float:
                out[k] = sanitize(v, strip_keys, patterns, sub)
            else:
                out[k] = v
        return out
    if t is list:
        items: list[Any] = []
        for i, v in enumerate(value):
            if states is None:
                sub = None
            else:
                dropped, sub = ignore.step(patterns, states, None, i)
                if dropped:
                    items.append(None)
                    continue
            tv = type(v)
            if tv is dict or tv is list or tv is float:
                items.append(sanitize(v, strip_keys, patterns, sub))
            else:
                items.append(v)
        return items
    if t is float and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def output_structure(snapshot: Json, rules: ignore.IgnoreRules) -> Json:
    """The part of an output snapshot that must stay equal (rule 3 plus ignore rules)."""
    return sanitize(snapshot, USAGE_KEYS, rules.output, ignore.initial(rules.output))


def tool_structure(tool_events: Json, rules: ignore.IgnoreRules) -> Json:
    """Tool events as compared: ignore rules applied, numbers by value."""
    return sanitize(tool_events, _NOTHING, rules.tools, ignore.initial(rules.tools))


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _same(a: Json, b: Json) -> bool:
    """JSON equality: bool is not a number; ints and floats compare by value."""
    ta, tb = type(a), type(b)
    if ta is bool or tb is bool:
        return ta is tb and a == b
    if ta is dict:
        return tb is dict and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if ta is list:
        return tb is list and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if ta in (int, float) and tb in (int, float):
        return bool(a == b)
    return ta is tb and a == b


def json_patch(recorded: Json, current: Json, path: str = "") -> list[dict[str, Any]]:
    """RFC 6902 operations that turn ``recorded`` into ``current``.

    Objects are walked by sorted key; arrays item by item, with trailing items added
    or removed (removals from the end first, so each index is valid when applied).
    """
    if _same(recorded, current):
        return []
    if type(recorded) is dict and type(current) is dict:
        ops: list[dict[str, Any]] = []
        for key in sorted(recorded.keys() | current.keys()):
            child = f"{path}/{_escape(key)}"
            if key not in current:
                ops.append({"op": "remove", "path": child})
            elif key not in recorded:
                ops.append({"op": "add", "path": child, "value": current[key]})
            else:
                ops.extend(json_patch(recorded[key], current[key], child))
        return ops
    if type(recorded) is list and type(current) is list:
        ops = []
        common = min(len(recorded), len(current))
        for i in range(common):
            ops.extend(json_patch(recorded[i], current[i], f"{path}/{i}"))
        for i in range(len(recorded) - 1, common - 1, -1):
            ops.append({"op": "remove", "path": f"{path}/{i}"})
        for i in range(common, len(current)):
            ops.append({"op": "add", "path": f"{path}/{i}", "value": current[i]})
        return ops
    return [{"op": "replace", "path": path, "value": current}]
