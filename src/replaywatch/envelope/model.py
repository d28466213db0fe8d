"""Noise envelopes: what a benign re-run looks like in one cohort, learned from the
re-runs the stream carries, and the judgment of a comparison against it. Pure.

An envelope counts, over the comparisons it learned from: how often each path differs
(and, for lists, changes as a set; for any value, changes its type or presence), the
distribution of each text path's similarity and each number path's relative delta,
the distributions of the relative token, cost and latency deltas, the tools the cohort
calls and how often its set of tools changes. A comparison is *outside* the envelope
when (``judge``):

- ``stable_path``: a path changed that differs in at most ``stable_rate`` of the
  learned re-runs (a key added or removed, an enum or amount that never moves);
- ``shape_changed``: a path changed type, appeared or vanished where that is rare;
- ``set_changed``: a list changed as a set where its set is stable (order may vary);
- ``text_below``: a text's similarity is below the cohort's low quantile minus the margin;
- ``number_above``, ``tokens_above``, ``cost_above``, ``latency_above``: a relative
  delta above the cohort's high quantile plus the margin;
- ``tool_never_called``: a tool the cohort never called was called;
- ``tool_set_changed``: the set of tools called changed where it is stable.

Strings of one word (ids, clocks) that differ are judged on their path's stability
only: a path that differs in every re-run carries no signal in its value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import orjson

from replaywatch.envelope.observe import TOOLS, Observation
from replaywatch.envelope.sketch import Histogram
from replaywatch.exceptions import ConfigError

SHAPE: Final = frozenset({"added", "removed", "type", "length"})
USAGE: Final = ("tokens", "cost", "latency")


@dataclass(frozen=True, slots=True)
class EnvelopeSettings:
    """How envelopes learn and judge (``REPLAYWATCH_ENVELOPE_*``, ``REPLAYWATCH_MAX_COHORTS``)."""

    warmup: int = 30
    """Comparisons a cohort learns from before its envelope judges."""
    margin: float = 0.02
    """Added beyond a learned quantile before a figure is outside (score or relative delta)."""
    stable_rate: float = 0.02
    """A path that differs in at most this share of the learned re-runs is stable."""
    tail_per_mille: int = 20
    """The quantile judged against: 20 is the 2nd (scores) and 98th (deltas) percentile."""
    max_cohorts: int = 200
    """Cohorts per input partition; the attempts of the others share the pooled cohort."""
    max_paths: int = 512
    """Paths an envelope keeps; differences on others count as pooled."""
    max_tools: int = 64

    def __post_init__(self) -> None:
        if self.warmup < 1:
            raise ConfigError(f"the envelope warm-up must be at least 1 comparison, got {self.warmup}")
        for name in ("margin", "stable_rate"):
            value = getattr(self, name)
            if not 0 <= value < 1:
                raise ConfigError(f"envelope {name} must be in [0, 1), got {value!r}")
        if not 0 < self.tail_per_mille < 500:
            raise ConfigError(f"envelope tail must be in (0, 500) per mille, got {self.tail_per_mille}")
        if self.max_cohorts < 1 or self.max_paths < 1 or self.max_tools < 1:
            raise ConfigError("envelope bounds (cohorts, paths, tools) must be at least 1")


class Crossing(NamedTuple):
    """One way a comparison fell outside its cohort's envelope."""

    envelope: str
    path: str
    """The JSON Pointer of the path (``/tool_events/...`` for tool calls), the tool's
    name for ``tool_never_called``, the usage number for ``*_above``, else ``""``."""
    figure: float
    limit: float
    of: int
    """The re-runs the envelope learned from."""

    @property
    def tools(self) -> bool:
        return self.envelope.startswith("tool_") or self.path.startswith(TOOLS)

    def describe(self) -> str:
        where = f" {self.path}" if self.path else ""
        if self.envelope in ("stable_path", "shape_changed", "set_changed", "tool_set_changed"):
            return f"{self.envelope}{where}: changed; it changes in {self.figure:.1%} of {self.of} re-runs"
        if self.envelope == "tool_never_called":
            return f"{self.envelope}{where}: no re-run of the cohort called it ({self.of} re-runs)"
        side = "below" if self.envelope.endswith("below") else "above"
        return f"{self.envelope}{where}: {self.figure:.3f} is {side} the limit {self.limit:.3f} ({self.of} re-runs)"


@dataclass
class PathStats:
    differs: int = 0
    set_changes: int = 0
    shape_changes: int = 0
    scores: Histogram | None = None
    deltas: Histogram | None = None
    reorders: int = 0
    """A list of scalars in another order only (the same set)."""
    doc: dict[str, Any] | None = field(default=None, compare=False, repr=False)
    """Its JSON form, kept until it learns again (most paths of an envelope do not
    change in a batch, and every changed envelope is written at the batch's end)."""

    def copy(self) -> PathStats:
        return PathStats(self.differs, self.set_changes, self.shape_changes,
                         None if self.scores is None else Histogram("score", list(self.scores.counts)),
                         None if self.deltas is None else Histogram("delta", list(self.deltas.counts)),
                         self.reorders)  # fmt: skip

    def merge(self, other: PathStats) -> PathStats:
        def both(a: Histogram | None, b: Histogram | None) -> Histogram | None:
            return b if a is None else a if b is None else a.merge(b)

        return PathStats(self.differs + other.differs, self.set_changes + other.set_changes,
                         self.shape_changes + other.shape_changes, both(self.scores, other.scores),
                         both(self.deltas, other.deltas), self.reorders + other.reorders)  # fmt: skip


def _usage() -> dict[str, Histogram]:
    return {name: Histogram("delta") for name in USAGE}


@dataclass
class CohortEnvelope:
    """One cohort's envelope (in one input partition: see ``state.envelopes``)."""

    seen: int = 0
    """Comparisons of the cohort, learned from or not."""
    learned: int = 0
    flaky: int = 0
    """Comparisons that differed beyond the paths that differ in every re-run."""
    crossed: int = 0
    """Comparisons judged outside the envelope."""
    paths: dict[str, PathStats] = field(default_factory=dict)
    usage: dict[str, Histogram] = field(default_factory=_usage)
    tools: set[str] = field(default_factory=set)
    tool_set_changes: int = 0
    pooled_paths: int = 0
    """Differences on paths not kept (the envelope held ``max_paths``)."""
    action: int = 0
    """The last operator action applied to it (``envelope.adaptive.Action``), 0: none."""
    relearning: bool = False
    """Learning again after ``relearn``: its warm-up learns from what the rules pass or not."""

    def copy(self) -> CohortEnvelope:
        return CohortEnvelope(self.seen, self.learned, self.flaky, self.crossed,
                              {p: s.copy() for p, s in self.paths.items()},
                              {n: Histogram("delta", list(h.counts)) for n, h in self.usage.items()},
                              set(self.tools), self.tool_set_changes, self.pooled_paths, self.action,
                              self.relearning)  # fmt: skip

    def rate(self, path: str) -> float:
        stats = self.paths.get(path)
        return 0.0 if stats is None or not self.learned else stats.differs / self.learned

    def merge(self, other: CohortEnvelope) -> CohortEnvelope:
        """Both envelopes' counts (the report's view of a cohort over partitions)."""
        paths = {p: s.copy() for p, s in self.paths.items()}
        for p, s in other.paths.items():
            paths[p] = paths[p].merge(s) if p in paths else s.copy()
        return CohortEnvelope(
            self.seen + other.seen, self.learned + other.learned, self.flaky + other.flaky,
            self.crossed + other.crossed, paths,
            {n: self.usage[n].merge(other.usage[n]) for n in USAGE},
            self.tools | other.tools, self.tool_set_changes + other.tool_set_changes,
            self.pooled_paths + other.pooled_paths, max(self.action, other.action),
            self.relearning or other.relearning,
        )  # fmt: skip

    def to_json(self) -> str:
        """Canonical JSON (sorted keys): the same envelope, the same text."""
        doc: dict[str, Any] = {
            "seen": self.seen, "learned": self.learned, "flaky": self.flaky, "crossed": self.crossed,
            "paths": {p: s.doc or _stats_json(s) for p, s in self.paths.items()},
            "usage": {n: h.to_json() for n, h in self.usage.items() if h.total},
            "tools": sorted(self.tools), "tool_set_changes": self.tool_set_changes,
            "pooled_paths": self.pooled_paths, "action": self.action, "relearning": self.relearning,
        }  # fmt: skip
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS).decode()

    @classmethod
    def from_json(cls, text: str) -> CohortEnvelope:
        doc = orjson.loads(text)
        usage = _usage()
        for n, h in doc.get("usage", {}).items():
            usage[n] = Histogram.from_json("delta", h)
        return cls(doc["seen"], doc["learned"], doc["flaky"], doc["crossed"],
                   {p: _stats_from(s) for p, s in doc["paths"].items()}, usage, set(doc["tools"]),
                   doc["tool_set_changes"], doc.get("pooled_paths", 0), doc.get("action", 0),
                   doc.get("relearning", False))  # fmt: skip


def _stats_json(s: PathStats) -> dict[str, Any]:
    out: dict[str, Any] = {"d": s.differs}
    s.doc = out
    if s.set_changes:
        out["s"] = s.set_changes
    if s.shape_changes:
        out["t"] = s.shape_changes
    if s.reorders:
        out["r"] = s.reorders
    if s.scores is not None:
        out["scores"] = s.scores.to_json()
    if s.deltas is not None:
        out["deltas"] = s.deltas.to_json()
    return out


def _stats_from(doc: dict[str, Any]) -> PathStats:
    return PathStats(doc["d"], doc.get("s", 0), doc.get("t", 0),
                     Histogram.from_json("score", doc["scores"]) if "scores" in doc else None,
                     Histogram.from_json("delta", doc["deltas"]) if "deltas" in doc else None,
                     doc.get("r", 0))  # fmt: skip


UNCERTAINTY: Final = 0.4
"""The widening of a limit learned from ``k`` samples: ``UNCERTAINTY / sqrt(k)`` (a
quantile of a few samples says little about the tail; 0.05 from 64)."""


def _widening(hist: Histogram, spread: float, settings: EnvelopeSettings) -> float:
    return max(settings.margin, spread / 2, UNCERTAINTY / math.sqrt(max(hist.total, 1)))


def lower_limit(scores: Histogram, settings: EnvelopeSettings) -> float:
    """The lowest score inside: the low quantile, less the widest of the margin, half
    the distance from it to the median, and the uncertainty of few samples."""
    low = scores.low(settings.tail_per_mille) or 0.0
    median = scores.low(500) or 0.0
    return round(low - _widening(scores, median - low, settings), 6)


def upper_limit(deltas: Histogram, settings: EnvelopeSettings) -> float:
    """The highest relative delta inside: the high quantile, plus the widest of the
    margin, half the distance from the median to it, and the uncertainty of few samples."""
    high = deltas.high(settings.tail_per_mille) or 0.0
    median = deltas.high(500) or 0.0
    return round(high + _widening(deltas, high - median, settings), 6)


def judge(env: CohortEnvelope, obs: Observation, settings: EnvelopeSettings) -> list[Crossing]:
    """How ``obs`` falls outside ``env`` (empty: inside). Meant for a warm envelope."""
    n = env.learned
    stable = settings.stable_rate
    out: list[Crossing] = []
    for change in obs.paths:
        stats = env.paths.get(change.path)
        rate = 0.0 if stats is None or not n else stats.differs / n
        if stats is None or rate <= stable:
            out.append(Crossing("stable_path", change.path, rate, stable, n))
            continue
        kind, figure = change.kind, change.figure
        if kind in SHAPE:
            if stats.shape_changes <= stable * n:
                out.append(Crossing("shape_changed", change.path, stats.shape_changes / n, stable, n))
        elif kind == "set" and stats.set_changes <= stable * n:
            out.append(Crossing("set_changed", change.path, stats.set_changes / n, stable, n))
        elif kind in ("text", "set") and figure is not None and stats.scores is not None:
            # (every lower limit is at least the margin below 1, every upper one above it)
            if figure < 1.0 - settings.margin and figure < (limit := lower_limit(stats.scores, settings)):
                out.append(Crossing("text_below", change.path, figure, limit, n))
        elif (
            kind == "number" and figure is not None and stats.deltas is not None and figure > settings.margin
            and figure > (limit := upper_limit(stats.deltas, settings))
        ):  # fmt: skip
            out.append(Crossing("number_above", change.path, figure, limit, n))
    for name, figure in zip(USAGE, (obs.tokens, obs.cost, obs.latency), strict=True):
        if figure is not None and figure > settings.margin and (hist := env.usage[name]).total:
            limit = upper_limit(hist, settings)
            if figure > limit:
                out.append(Crossing(f"{name}_above", name, figure, limit, n))
    if len(env.tools) < settings.max_tools:
        for tool in sorted(obs.tools_now - env.tools):
            out.append(Crossing("tool_never_called", tool, 0.0, 0.0, n))
    if obs.tools_before != obs.tools_now and env.tool_set_changes <= stable * n:
        out.append(Crossing("tool_set_changed", "", env.tool_set_changes / max(n, 1), stable, n))
    return out


def learn(env: CohortEnvelope, obs: Observation, settings: EnvelopeSettings) -> None:
    """Count ``obs`` in ``env`` (in place)."""
    env.learned += 1
    for change in obs.paths:
        stats = env.paths.get(change.path)
        if stats is None:
            if len(env.paths) >= settings.max_paths:
                env.pooled_paths += 1
                continue
            stats = env.paths[change.path] = PathStats()
        stats.differs += 1
        stats.doc = None
        kind, figure = change.kind, change.figure
        if kind in SHAPE:
            stats.shape_changes += 1
        elif kind == "set":
            stats.set_changes += 1
        elif kind == "list":
            stats.reorders += 1
        if kind in ("text", "set") and figure is not None and figure < 1.0:  # (1: case and spacing)
            if stats.scores is None:
                stats.scores = Histogram("score")
            stats.scores.add(figure)
        elif kind == "number" and figure is not None:
            if stats.deltas is None:
                stats.deltas = Histogram("delta")
            stats.deltas.add(figure)
    for name, figure in zip(USAGE, (obs.tokens, obs.cost, obs.latency), strict=True):
        if figure is not None:
            env.usage[name].add(figure)
    for tool in sorted(obs.tools_before | obs.tools_now):
        if len(env.tools) < settings.max_tools:
            env.tools.add(tool)
    if obs.tools_before != obs.tools_now:
        env.tool_set_changes += 1


def count(env: CohortEnvelope, obs: Observation, crossed: bool, settings: EnvelopeSettings) -> None:
    """Count a comparison of the cohort, learned from or not (in place): seen, flaky
    (it differed beyond the paths that differ in every re-run), crossed."""
    env.seen += 1
    always = 1.0 - settings.stable_rate
    if obs.tools_before != obs.tools_now or any(env.rate(c.path) < always for c in obs.paths):
        env.flaky += 1
    if crossed:
        env.crossed += 1
