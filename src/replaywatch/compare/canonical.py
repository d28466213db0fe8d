"""Canonical JSON: the one byte form used for equality and for content addresses.

Canonical bytes are UTF-8, keys sorted, no insignificant whitespace. orjson does the
work; integers wider than 64 bits (which orjson refuses) fall back to the standard
library with the same layout, so a document always gets the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final

import orjson

from replaywatch.exceptions import InvalidJsonError

Json = Any
"""A value as parsed from JSON: dict, list, str, int, float, bool or None."""

_SORT: Final = orjson.OPT_SORT_KEYS


def parse_json(text: str | bytes) -> Json:
    """Parse strict JSON (RFC 8259) with orjson. NaN and Infinity are refused, and so
    is nesting deeper than 1024 levels. Integers wider than 64 bits are read as doubles
    (as serde_json, the reference's parser, does).

    Raises InvalidJsonError with the parser's reason.
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
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
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
            "utf-8"
        )


def compact_bytes(value: Json) -> bytes:
    """UTF-8, keys in their order, no whitespace: a JSON value stored as it was sent."""
    try:
        return _fit(orjson.dumps(value))
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
