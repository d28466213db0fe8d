"""Structure: a snapshot with its usage keys and ignored paths removed, JSON equality,
and the JSON Patch (RFC 6902) between two structures.

``strip_usage`` is the hot path of the engine: one walk that copies the snapshot
without its usage keys *and* finds the usage numbers with the reference's search
order (see ``usage.find_number``, its specification).

The patch generator is our own, small and deterministic on purpose: its output is
hashed into a content address, so it must not change with a library upgrade, and it
must tell ``true`` from ``1`` (Python's ``==`` does not).
"""

from __future__ import annotations

from typing import Any

from replaywatch.compare import ignore
from replaywatch.compare.attestations import ATTESTATION_KEY
from replaywatch.compare.canonical import Json
from replaywatch.compare.usage import COST_KEYS, TOKEN_KEYS, USAGE_KEYS, as_number

_TOP_DROP = USAGE_KEYS | {ATTESTATION_KEY}


def _own(d: dict[str, Any], keys: tuple[str, ...]) -> float | None:
    for key in keys:
        if key in d:
            n = as_number(d[key])
            if n is not None:
                return n
    return None


def _search(value: Json, acc: list[float | None]) -> None:
    """Find usage numbers in ``value`` without copying it (for dropped subtrees)."""
    if type(value) is dict:
        if acc[0] is None:
            acc[0] = _own(value, TOKEN_KEYS)
        if acc[1] is None:
            acc[1] = _own(value, COST_KEYS)
        children = value.values()
    elif type(value) is list:
        children = value  # type: ignore[assignment]
    else:
        return
    for v in children:
        if acc[0] is not None and acc[1] is not None:
            return
        t = type(v)
        if t is dict or t is list:
            _search(v, acc)


def _strip_dict(d: dict[str, Any], acc: list[float | None], drop: frozenset[str]) -> dict[str, Any]:
    if acc[0] is None:
        acc[0] = _own(d, TOKEN_KEYS)
    if acc[1] is None:
        acc[1] = _own(d, COST_KEYS)
    out: dict[str, Any] = {}
    for k, v in d.items():
        t = type(v)
        if k in drop:
            if (t is dict or t is list) and (acc[0] is None or acc[1] is None):
                _search(v, acc)
        elif t is dict:
            out[k] = _strip_dict(v, acc, USAGE_KEYS)
        elif t is list:
            out[k] = _strip_list(v, acc)
        else:
            out[k] = v
    return out


def _strip_list(items: list[Any], acc: list[float | None]) -> list[Any]:
    out: list[Any] = []
    for v in items:
        t = type(v)
        if t is dict:
            out.append(_strip_dict(v, acc, USAGE_KEYS))
        elif t is list:
            out.append(_strip_list(v, acc))
        else:
            out.append(v)
    return out


def strip_usage(snapshot: Json) -> tuple[Json, float | None, float | None]:
    """(snapshot without usage keys and top-level attestation ids, tokens, cost).

    The top-level ``attestation_ids`` are left out of the structure: they have a rule
    of their own (compared as sets), and counting an order-only change as structural
    drift would undo that choice.
    """
    acc: list[float | None] = [None, None]
    t = type(snapshot)
    if t is dict:
        stripped: Json = _strip_dict(snapshot, acc, _TOP_DROP)
    elif t is list:
        stripped = _strip_list(snapshot, acc)
    else:
        stripped = snapshot
    return stripped, acc[0], acc[1]


def drop_ignored(
    value: Json, patterns: tuple[ignore.Pattern, ...], states: frozenset[ignore.State] | None = None
) -> Json:
    """Copy ``value`` without the paths that ignore rules match."""
    if states is None:
        states = ignore.initial(patterns)
        if states is None:
            return value
    t = type(value)
    if t is dict:
        out: dict[str, Any] = {}
        for k, v in value.items():
            dropped, sub = ignore.step(patterns, states, k, None)
            if not dropped:
                out[k] = v if sub is None else drop_ignored(v, patterns, sub)
        return out
    if t is list:
        items: list[Any] = []
        for i, v in enumerate(value):
            dropped, sub = ignore.step(patterns, states, None, i)
            items.append(None if dropped else v if sub is None else drop_ignored(v, patterns, sub))
        return items
    return value


def output_structure(snapshot: Json, rules: ignore.IgnoreRules) -> Json:
    """The part of an output snapshot that must stay equal (rule 3 plus ignore rules)."""
    return drop_ignored(strip_usage(snapshot)[0], rules.output)


def tool_structure(tool_events: Json, rules: ignore.IgnoreRules) -> Json:
    """Tool events as compared: ignore rules applied."""
    return drop_ignored(tool_events, rules.tools)


def same(a: Json, b: Json) -> bool:
    """JSON equality: objects regardless of key order, arrays in order, numbers by
    value (1 == 1.0), and a boolean is never a number."""
    ta, tb = type(a), type(b)
    if ta is dict:
        return tb is dict and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if ta is list:
        return tb is list and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if ta is bool or tb is bool:
        return ta is tb and a == b
    if ta in (int, float) and tb in (int, float):
        return bool(a == b)
    return ta is tb and a == b


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def json_patch(recorded: Json, current: Json, path: str = "") -> list[dict[str, Any]]:
    """RFC 6902 operations that turn ``recorded`` into ``current``.

    Objects are walked by sorted key; arrays item by item, with trailing items added
    or removed (removals from the end first, so each index is valid when applied).
    """
    if same(recorded, current):
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
