"""Counting comparisons into tumbling windows of event time, per cohort and policy.

A comparison counts in the base window its attempt's ``occurred_at`` falls in, under
the cohort of its attempt (provider, provider version, step kind) and its policy. Each
input partition keeps a clock: the newest event time it has counted (its watermark is
that minus the allowed lateness). A comparison whose window ended at or before the
watermark when it arrived is *late*: it is counted in its window's ``late`` counter
only, never in its rates. The clock moves in offset order, so a replay of the same
offsets counts exactly the same; it is committed with the partition's offsets.

An event time further ahead than ``max_skew`` of the record's Kafka timestamp moves
the clock only that far: one record stamped in the year 2099 cannot make every later
record late.

A partition counts at most ``max_cohorts`` cohorts; the comparisons of the others pool
under ``(pooled)``, so no input can grow the windows without bound.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from replaywatch.compare.engine import Comparison, Verdict
from replaywatch.envelope.cohort import POOLED

COUNTERS: Final = (
    "comparisons",
    "within_tolerance",
    "drift",
    "attestation_divergence",
    "tool_event_divergence",
    "structure",
    "tool_added",
    "tool_removed",
    "tool_changed",
    "attestation",
    "tokens",
    "cost",
    "latency",
    "late",
)
"""What a window counts, in this order: comparisons, then per verdict, then per cause
of the comparisons not within tolerance (a comparison may have several causes), then
the comparisons that came after the window was closed for good."""
CAUSES: Final = COUNTERS[5:13]
INDEX: Final = {name: i for i, name in enumerate(COUNTERS)}
LATE: Final = INDEX["late"]
WITHIN: Final = INDEX["within_tolerance"]
Counts = list[int]
RateKey = tuple[str, str, int]
"""(cohort, policy, base window start in ms)."""


@dataclass(frozen=True)
class RatesSettings:
    window_ms: int = 60_000
    """The base width; the rollups are multiples of it."""
    rollups_ms: tuple[int, ...] = (300_000, 3_600_000)
    lateness_ms: int = 120_000
    max_skew_ms: int = 300_000
    idle_ms: int = 600_000
    """A partition that has counted nothing for this long (wall clock) holds no window open."""
    max_cohorts: int = 200
    alert_width_ms: int = 300_000
    reference_windows: int = 12
    """Trailing alert windows that make a cohort's own reference."""
    min_reference: int = 100
    """Comparisons a reference needs before a window is tested against it."""
    alpha: float = 0.001
    """The false discovery rate across the cohorts tested in one window (Benjamini-Hochberg)."""
    min_ratio: float = 1.5
    min_difference: float = 0.02
    min_comparisons: int = 20
    resolve_windows: int = 2
    cooldown_windows: int = 3
    quiet_windows: int = 12
    """Alert windows with no comparisons after which an open alert resolves (no traffic)."""

    @property
    def widths(self) -> tuple[int, ...]:
        return (self.window_ms, *self.rollups_ms)

    def check(self) -> None:
        """Raise ValueError naming what is inconsistent."""
        if self.window_ms <= 0 or any(w <= 0 or w % self.window_ms for w in self.rollups_ms):
            raise ValueError("each rates rollup must be a positive multiple of the base window")
        if self.alert_width_ms not in self.widths:
            raise ValueError(f"the alert window ({self.alert_width_ms} ms) must be the base window or a rollup")


@dataclass
class Clock:
    """A partition's counting state: the newest event time counted, and its cohorts."""

    newest_ms: int | None = None
    cohorts: set[str] = field(default_factory=set)

    def to_json(self) -> dict[str, object]:
        return {"newest_ms": self.newest_ms, "cohorts": sorted(self.cohorts)}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Clock:
        newest, cohorts = data.get("newest_ms"), data.get("cohorts")
        return cls(newest if isinstance(newest, int) else None, set(cohorts) if isinstance(cohorts, list) else set())


def window_of(occurred_ms: int, width_ms: int) -> int:
    return occurred_ms - occurred_ms % width_ms


def tally(c: Comparison) -> Counts:
    """One comparison's counts: its verdict, and the causes of a drift."""
    out = [0] * len(COUNTERS)
    out[0] = 1
    out[INDEX[c.verdict.value]] = 1
    if c.verdict is Verdict.WITHIN_TOLERANCE:
        return out
    causes = {
        "structure": not c.structure_equal,
        "tool_added": c.tool_changes.added > 0,
        "tool_removed": c.tool_changes.removed > 0,
        "tool_changed": c.tool_changes.changed > 0 or c.tool_changes.moved > 0,
        "attestation": bool(c.missing_attestations or c.unexpected_attestations),
        "tokens": not c.tokens_within,
        "cost": not c.cost_within,
        "latency": not c.latency_within,
    }
    for name, present in causes.items():
        out[INDEX[name]] = int(present)
    return out


def add_into(into: Counts, more: Sequence[int]) -> None:
    for i, n in enumerate(more):
        into[i] += n


@dataclass
class Windows:
    """Counts a batch's comparisons on top of the partitions' clocks (``clocks``, changed
    in place, in input order). ``deltas``: what the batch adds to each base window."""

    settings: RatesSettings
    clocks: MutableMapping[int, Clock]
    deltas: dict[RateKey, Counts] = field(default_factory=dict)
    touched: set[int] = field(default_factory=set)
    """The partitions whose clocks moved."""

    def add(self, partition: int, occurred_ms: int, stamped_ms: int, cohort: str, policy: str, c: Comparison) -> None:
        """Count comparison ``c`` of an attempt that occurred at ``occurred_ms``, read from
        a record the broker stamped ``stamped_ms`` (0: unknown)."""
        s = self.settings
        clock = self.clocks.get(partition)
        if clock is None:
            clock = self.clocks[partition] = Clock()
        if cohort not in clock.cohorts:
            if len(clock.cohorts) >= s.max_cohorts:
                cohort = POOLED
            clock.cohorts.add(cohort)
        start = occurred_ms - occurred_ms % s.window_ms
        key = (cohort, policy, start)
        counts = self.deltas.get(key)
        if counts is None:
            counts = self.deltas[key] = [0] * len(COUNTERS)
        newest = clock.newest_ms
        if newest is not None and start + s.window_ms + s.lateness_ms <= newest:
            counts[LATE] += 1
        elif c.verdict is Verdict.WITHIN_TOLERANCE:  # the common case, without a list of its own
            counts[0] += 1
            counts[WITHIN] += 1
        else:
            add_into(counts, tally(c))
        moved_to = min(occurred_ms, stamped_ms + s.max_skew_ms) if stamped_ms > 0 else occurred_ms
        if newest is None or moved_to > newest:
            clock.newest_ms = moved_to
        self.touched.add(partition)
