"""Canonical JSON: the one byte form used for equality and for content addresses.

Canonical bytes are UTF-8, keys sorted, no insignificant whitespace. orjson does the
work. It refuses documents nested deeper than 254 levels (the contract accepts 1,024)
and integers wider than 64 bits; those are written by ``_dumps_iteratively``, an
explicit-stack writer that gives the bytes orjson would give (each scalar is written by
orjson itself), so a document always gets the same bytes whichever writer ran.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final

import orjson

from replaywatch.compare import budget
from replaywatch.exceptions import InvalidJsonError, JsonTooDeep

Json = Any
"""A value as parsed from JSON: dict, list, str, int, float, bool or None."""

_SORT: Final = orjson.OPT_SORT_KEYS
MAX_DEPTH: Final = 1024
"""Deepest nesting the contract accepts (orjson's parser refuses deeper documents)."""


def parse_json(text: str | bytes) -> Json:
    """Parse strict JSON (RFC 8259) with orjson. NaN and Infinity are refused, and so
    is nesting deeper than 1024 levels. Integers wider than 64 bits are read as doubles
    (as serde_json, the reference's parser, does).

    Raises InvalidJsonError with the parser's reason.
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):
            raise JsonTooDeep(
                f"JSON nests deeper than {MAX_DEPTH} levels, the contract's limit; flatten the document"
            ) from None
        at = text[exc.pos : exc.pos + 4]
        if at[:3] in ("NaN", "Inf", b"NaN", b"Inf") or at in ("-Inf", b"-Inf"):
            raise InvalidJsonError(
                f"JSON holds NaN or Infinity at character {exc.pos}, which JSON does not allow; "
                "send null or a finite number"
            ) from None
        raise InvalidJsonError(f"JSON text does not parse: {exc}") from None


def _fit(data: bytes) -> bytes:
    """A copy of orjson's output that takes its own size: the bytes orjson returns keep
    its whole write buffer (8 KB for a 1 KB document, measured), and fingerprints and
    snapshots are kept for the life of a step."""
    return memoryview(data).tobytes()


def canonical_bytes(value: Json) -> bytes:
    """UTF-8, sorted keys, no whitespace. Same value, same bytes."""
    try:
        return _fit(orjson.dumps(value, option=_SORT))
    except orjson.JSONEncodeError:  # too deep for orjson, or a wide integer
        return _dumps_iteratively(value, sort_keys=True)


def compact_bytes(value: Json) -> bytes:
    """UTF-8, keys in their order, no whitespace: a JSON value stored as it was sent."""
    try:
        return _fit(orjson.dumps(value))
    except orjson.JSONEncodeError:
        return _dumps_iteratively(value, sort_keys=False)


def _scalar(value: Json) -> bytes:
    try:
        return orjson.dumps(value)
    except orjson.JSONEncodeError:  # an integer wider than 64 bits
        return json.dumps(value, allow_nan=False).encode()


class _Raw(bytes):
    """Punctuation already written, pushed on the writer's stack between values."""


_COMMA = _Raw(b",")
_CLOSE_OBJECT, _CLOSE_ARRAY = _Raw(b"}"), _Raw(b"]")


_ORJSON_DEPTH: Final = 254
"""The deepest nesting orjson writes."""
_TOO_DEEP: Final = 1 << 30
"""The height given to a container orjson cannot write: it holds a wide integer."""
_INT_RANGE: Final = (-(2**63), 2**64 - 1)


def _heights(value: Json) -> dict[int, int]:
    """Each container's height (1: it holds no container), by ``id``; ``_TOO_DEEP`` for
    one that holds an integer wider than 64 bits at any depth. One post-order walk with
    an explicit stack, linear in the document; the scalars of a container are looked at
    in C (their types as a set, the extremes of its integers), not one by one."""
    charge = budget.current.spend
    low, high = _INT_RANGE
    heights: dict[int, int] = {}
    # (container, None): to visit; (container, its child containers): to finish
    stack: list[tuple[Json, list[Json] | None]] = [(value, None)]
    while stack:
        node, kids = stack.pop()
        if kids is not None:
            own = heights.get(id(node), 0)
            heights[id(node)] = max(own, 1 + max(heights[id(k)] for k in kids))
            continue
        items = list(node.values()) if type(node) is dict else node
        charge(len(items) + 1)
        kinds = set(map(type, items))
        if int in kinds:
            ints = items if len(kinds) == 1 else [v for v in items if type(v) is int]
            if min(ints) < low or max(ints) > high:
                heights[id(node)] = _TOO_DEEP
        if dict in kinds or list in kinds:
            kids = [v for v in items if type(v) is dict or type(v) is list]
            stack.append((node, kids))
            stack.extend((k, None) for k in kids)
        else:
            heights.setdefault(id(node), 1)
    return heights


def _dumps_iteratively(value: Json, *, sort_keys: bool) -> bytes:
    """orjson's layout, written with an explicit stack: any depth, any integer width.

    Every subtree orjson can write (at most 254 levels, no wide integer) is written by
    orjson in one call; only the levels above them, and containers with a wide integer,
    are walked here. So a deep document costs a Python step per deep container, not
    per value."""
    if type(value) not in (dict, list):
        return _scalar(value)
    heights = _heights(value)
    option = _SORT if sort_keys else 0
    charge = budget.current.spend
    out: list[bytes] = []
    stack: list[Json] = [value]
    while stack:
        item = stack.pop()
        t = type(item)
        if t is _Raw:
            out.append(item)
            continue
        charge(1)
        if (t is dict or t is list) and heights[id(item)] <= _ORJSON_DEPTH:
            data = orjson.dumps(item, option=option)
            charge(len(data) >> 6)
            out.append(data)
        elif t is dict:
            keys = sorted(item) if sort_keys else list(item)
            out.append(b"{")
            stack.append(_CLOSE_OBJECT)
            for i in range(len(keys) - 1, -1, -1):
                stack.append(item[keys[i]])
                stack.append(_Raw(_scalar(keys[i]) + b":"))
                if i:
                    stack.append(_COMMA)
        elif t is list:
            out.append(b"[")
            stack.append(_CLOSE_ARRAY)
            for i in range(len(item) - 1, -1, -1):
                stack.append(item[i])
                if i:
                    stack.append(_COMMA)
        else:
            out.append(_scalar(item))
    return b"".join(out)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
