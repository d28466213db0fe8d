"""Comparators: how much two values at one path differ, and whether that is normal.

Exact equality after ignore rules cannot tell a reworded answer from a regression. A
policy names a comparator per path (the ignore rules' syntax), and each scores the pair
of values it is given in [0, 1] and says whether the pair passes:

- ``exact``: JSON equality (score 1 or 0); the default everywhere;
- ``text``: two strings compared after folding case and whitespace, by normalized
  Levenshtein similarity (rapidfuzz, in C), passing at ``threshold`` (default 0.8);
- ``words``: two strings compared as sets of words after folding case and whitespace
  (rapidfuzz's token-set ratio), passing at ``threshold`` (default 0.6): a rewording
  keeps most of an answer's words, a refusal few of them (what envelopes score texts by);
- ``semantic``: cosine similarity of sentence embeddings (a small static model, the
  optional ``semantic`` extra), passing at ``threshold`` (default 0.55: with the bundled
  model, rewordings score 0.66 and more, refusals and other answers 0.39 and less);
- ``number``: two numbers within ``abs`` or within ``rel`` of the larger magnitude;
  the score is their relative closeness;
- ``set``: two lists compared as sets (order and repeats ignored), passing when no
  member was added or removed; the score is their Jaccard similarity;
- ``ignore``: left out of the comparison altogether.

A comparator given values it is not made for (``text`` over a number, ``set`` over an
object) compares them exactly: a type change is a change. Every scorer is a plain
function of two JSON values and returns a ``Score``, so they compose and the walk that
applies them (``graded``) knows nothing of how each decides.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NamedTuple

from rapidfuzz import fuzz
from rapidfuzz.distance import Levenshtein

from replaywatch.compare.canonical import Json, canonical_bytes
from replaywatch.compare.structure import same
from replaywatch.exceptions import ConfigError

Kind = Literal["exact", "text", "words", "semantic", "number", "set", "ignore"]
KINDS: Final[tuple[str, ...]] = ("exact", "text", "words", "semantic", "number", "set", "ignore")
_SPACE = re.compile(r"\s+")
_SLACK: Final = 1 + 1e-9


def _is_number(value: Json) -> bool:
    return type(value) in (int, float)


class Score(NamedTuple):
    """What a comparator says of one pair of values."""

    score: float
    """Similarity in [0, 1]: 1 is the same."""
    passed: bool
    detail: dict[str, Any] | None = None
    """What a person needs beside the score (a set's added and removed members)."""


@dataclass(frozen=True, slots=True)
class Comparator:
    """One comparator with its parameters, as a policy configures it."""

    kind: Kind = "exact"
    threshold: float | None = None
    """``text`` and ``semantic``: the least score that passes; ``set``: the least Jaccard."""
    abs_tol: float = 0.0
    rel_tol: float = 0.0
    embed: Callable[[str], Any] | None = field(default=None, compare=False, repr=False)
    """``semantic``: the model that turns a text into a unit vector (loaded once)."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"comparator {self.kind!r} is unknown; use one of {', '.join(KINDS)}")
        for name in ("abs_tol", "rel_tol"):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value) or value < 0:
                raise ConfigError(f"comparator {self.kind}: {name} must be a finite number >= 0, got {value!r}")
        if self.threshold is not None and not (_is_number(self.threshold) and 0 <= self.threshold <= 1):
            raise ConfigError(f"comparator {self.kind}: threshold must be a number from 0 to 1, got {self.threshold!r}")
        if self.kind == "semantic" and self.embed is None:
            raise ConfigError(
                "comparator semantic needs a model (the semantic extra: pip install 'replaywatch[semantic]')"
            )

    @property
    def rule(self) -> str:
        """What passes, in words: ``threshold 0.8``, ``abs 0.05, rel 0``, ``equal``."""
        if self.kind == "number":
            return f"abs {self.abs_tol:g}, rel {self.rel_tol:g}"
        if self.kind in ("text", "words", "semantic", "set"):
            return f"threshold {self.least:g}"
        return "equal"

    @property
    def least(self) -> float:
        """The least score that passes."""
        if self.threshold is not None:
            return float(self.threshold)
        return {"text": 0.8, "words": 0.6, "semantic": 0.55}.get(self.kind, 1.0)

    def describe(self) -> dict[str, Any]:
        """Its settings as plain data (in the policy's fingerprint and the diff)."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind in ("text", "words", "semantic", "set"):
            out["threshold"] = self.least
        if self.kind == "number":
            out |= {"abs": float(self.abs_tol), "rel": float(self.rel_tol)}
        return out

    def __call__(self, recorded: Json, current: Json) -> Score:
        """Score one pair of values."""
        if self.kind == "text" and type(recorded) is str and type(current) is str:
            return _text(recorded, current, self.least)
        if self.kind == "words" and type(recorded) is str and type(current) is str:
            score = words_similarity(recorded, current)
            return Score(score, score >= self.least)
        if self.kind == "semantic" and type(recorded) is str and type(current) is str:
            assert self.embed is not None
            return _semantic(recorded, current, self.least, self.embed)
        if self.kind == "number" and _is_number(recorded) and _is_number(current):
            return _number(float(recorded), float(current), self.abs_tol, self.rel_tol)
        if self.kind == "set" and type(recorded) is list and type(current) is list:
            return _set(recorded, current, self.least)
        return exact(recorded, current)


EXACT: Final = Comparator()


def exact(recorded: Json, current: Json) -> Score:
    """JSON equality: 1 and 1.0 are equal, ``true`` and ``1`` are not."""
    equal = same(recorded, current)
    return Score(1.0 if equal else 0.0, equal)


def normalize_text(text: str) -> str:
    """Case folded, runs of whitespace as one space, trimmed."""
    return _SPACE.sub(" ", text.casefold()).strip()


def _text(recorded: str, current: str, least: float) -> Score:
    a, b = normalize_text(recorded), normalize_text(current)
    score = 1.0 if a == b else float(Levenshtein.normalized_similarity(a, b))
    return Score(score, score >= least)


def words_similarity(recorded: str, current: str) -> float:
    """Token-set similarity of two texts, case and whitespace folded, in [0, 1]."""
    a, b = normalize_text(recorded), normalize_text(current)
    return 1.0 if a == b else float(fuzz.token_set_ratio(a, b)) / 100.0


def _semantic(recorded: str, current: str, least: float, embed: Callable[[str], Any]) -> Score:
    a, b = normalize_text(recorded), normalize_text(current)
    if a == b:
        return Score(1.0, True)
    if not a or not b:
        return Score(0.0, least <= 0)
    cosine = float(embed(a) @ embed(b))  # unit vectors
    score = min(1.0, max(0.0, cosine))
    return Score(score, score >= least)


def _number(recorded: float, current: float, abs_tol: float, rel_tol: float) -> Score:
    if recorded == current:
        return Score(1.0, True)
    diff = abs(recorded - current)
    larger = max(abs(recorded), abs(current))
    # with a part in a billion of slack, so that 0.93 and 0.91 are within 0.02 as written
    passed = diff <= abs_tol * _SLACK or diff <= rel_tol * larger * _SLACK
    score = max(0.0, 1.0 - diff / larger) if larger and math.isfinite(diff) else 0.0
    return Score(score, passed)


def _set(recorded: list[Any], current: list[Any], least: float) -> Score:
    before = {canonical_bytes(_normal_number(v)): v for v in recorded}
    after = {canonical_bytes(_normal_number(v)): v for v in current}
    removed = [before[k] for k in before if k not in after]
    added = [after[k] for k in after if k not in before]
    union = len(before.keys() | after.keys())
    score = 1.0 if not union else (union - len(removed) - len(added)) / union
    passed = (not removed and not added) if least >= 1.0 else score >= least
    return Score(score, passed, {"added": added, "removed": removed} if added or removed else None)


def _normal_number(value: Json) -> Json:
    """An integral float as an int, so that a set holds 1 and 1.0 once (top level only:
    members are compared by their canonical bytes)."""
    if type(value) is float and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value
