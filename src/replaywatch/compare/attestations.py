"""Attestation ids, compared as sets.

The reference compares the lists, so reordering ids counts as a divergence there.
Ids are identifiers, so replaywatch compares them as sets: an order-only change or a
repeated id is not a divergence. ``missing`` and ``unexpected`` are sorted.
"""

from __future__ import annotations

from typing import Final

from replaywatch.compare.canonical import Json

ATTESTATION_KEY: Final = "attestation_ids"


def extract(snapshot: Json) -> tuple[str, ...]:
    """The distinct string ids in the top-level ``attestation_ids`` array, sorted.

    Absent, not an array, or holding non-strings: those parts count as no ids.
    """
    if type(snapshot) is not dict:
        return ()
    ids = snapshot.get(ATTESTATION_KEY)
    if type(ids) is not list:
        return ()
    return tuple(sorted({i for i in ids if type(i) is str}))


def diff(baseline: tuple[str, ...], current: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(missing: baseline but not current, unexpected: current but not baseline)."""
    rec, cur = set(baseline), set(current)
    return tuple(sorted(rec - cur)), tuple(sorted(cur - rec))
