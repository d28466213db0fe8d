"""Canonical JSON: the one byte form used for equality and for content addresses.

Canonical bytes are UTF-8, keys sorted, no insignificant whitespace. orjson does the
work; integers wider than 64 bits (which orjson refuses) fall back to the standard
library with the same layout, so a document always gets the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Final

import orjson

from replaywatch.exceptions import InvalidJsonError

Json = Any
"""A value as parsed from JSON: dict, list, str, int, float, bool or None."""

_SORT: Final = orjson.OPT_SORT_KEYS


def _reject_constant(name: str) -> float:
    raise InvalidJsonError(f"JSON holds {name}, which is not valid JSON; send null or a finite number")


def parse_json(text: str | bytes) -> Json:
    """Parse strict JSON (RFC 8259). NaN and Infinity are refused.

    Raises InvalidJsonError with the parser's reason.
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        # orjson refuses NaN/Infinity and integers wider than 64 bits. The first is bad
        # input; the second is valid JSON, so the standard parser gets a second look.
        try:
            return json.loads(text, parse_constant=_reject_constant)
        except InvalidJsonError:
            raise
        except (ValueError, RecursionError) as exc2:
            raise InvalidJsonError(f"JSON text does not parse: {exc2}") from exc
        except TypeError as exc2:  # pragma: no cover - bytes of an unknown encoding
            raise InvalidJsonError(f"JSON text does not parse: {exc}") from exc2


def canonical_bytes(value: Json) -> bytes:
    """UTF-8, sorted keys, no whitespace. Same value, same bytes."""
    try:
        return orjson.dumps(value, option=_SORT)
    except (TypeError, orjson.JSONEncodeError):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
            "utf-8"
        )


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def normalize_numbers(value: Json) -> Json:
    """Integral floats become ints, so numbers compare by value (1 == 1.0).

    Booleans stay booleans: JSON true is not the number 1.
    """
    if isinstance(value, dict):
        return {k: normalize_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize_numbers(v) for v in value]
    if type(value) is float and math.isfinite(value) and value.is_integer():
        return int(value)
    return value
