"""Closing windows: which windows of the fleet are closed, their rollups, and the rates
that go out for them. Pure.

The fleet's clock is the oldest of the partitions' clocks, leaving aside a partition
that has read all its records and has counted nothing for ``idle_ms`` of wall-clock
time (an idle partition holds nothing open; one with records waiting does). A window of any width is closed
once the fleet's clock has reached its end; it is published then, and published again,
with the next version, whenever its counts change afterwards (a late comparison within
the lateness, a backfill of its range). It is *final* once the fleet's clock is past its
end by the lateness: alerts judge final windows only, so a verdict never rests on counts
that may still move.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from replaywatch.rates.tally import COUNTERS, INDEX, Counts, RateKey, RatesSettings, add_into, window_of

SeriesKey = tuple[str, str, int, int]
"""(cohort, policy, width in ms, window start in ms)."""


@dataclass(frozen=True)
class Rate:
    """One closed window of one cohort and policy, as the rates topic carries it."""

    cohort: str
    policy: str
    width_ms: int
    start_ms: int
    version: int
    counts: tuple[int, ...]

    @property
    def key(self) -> SeriesKey:
        return (self.cohort, self.policy, self.width_ms, self.start_ms)

    @property
    def comparisons(self) -> int:
        return self.counts[0]

    @property
    def drifted(self) -> int:
        return self.counts[0] - self.counts[INDEX["within_tolerance"]]

    @property
    def rate(self) -> float | None:
        return self.drifted / self.comparisons if self.comparisons else None

    def named(self) -> dict[str, int]:
        return dict(zip(COUNTERS, self.counts, strict=True))


def fleet_clock(clocks: Mapping[int, tuple[int, float]], waiting: Iterable[int], idle_ms: int) -> int | None:
    """The event time up to which the fleet has counted, from each partition's (clock,
    seconds since it last counted) and the partitions with records not yet read
    (``waiting``). A partition holds windows open while records wait in it or while it
    counted within ``idle_ms``; one whose records wait and which never counted holds
    everything (None). When no partition holds any, the newest clock."""
    held = []
    for p in waiting:
        if p not in clocks:
            return None
        held.append(clocks[p][0])
    held += [t for t, idle in clocks.values() if idle * 1000 < idle_ms]
    if held:
        return min(held)
    return max((t for t, _ in clocks.values()), default=None)


def rollup(base: Mapping[RateKey, Counts], width_ms: int) -> dict[SeriesKey, Counts]:
    """The base windows summed into windows of ``width_ms``."""
    out: dict[SeriesKey, Counts] = {}
    for (cohort, policy, start), counts in base.items():
        key = (cohort, policy, width_ms, window_of(start, width_ms))
        add_into(out.setdefault(key, [0] * len(COUNTERS)), counts)
    return out


def spans(changed: Iterable[RateKey], settings: RatesSettings) -> set[tuple[str, str, int, int]]:
    """(cohort, policy, start, end) of the widest window around each changed base window:
    the base windows to read to recount every window they touch."""
    widest = max(settings.widths)
    return {(c, p, window_of(s, widest), window_of(s, widest) + widest) for c, p, s in changed}


def close(
    base: Mapping[RateKey, Counts],
    published: Mapping[SeriesKey, tuple[int, tuple[int, ...]]],
    clock: int | None,
    settings: RatesSettings,
) -> list[Rate]:
    """The rates to publish: every closed window (of every width) over the base windows
    ``base`` whose counts differ from the version ``published`` holds (new ones at
    version 1). ``base`` must hold every base window of the wider windows it touches."""
    if clock is None:
        return []
    out: list[Rate] = []
    for width in settings.widths:
        for key, counts in sorted(rollup(base, width).items()):
            if key[3] + width > clock:
                continue
            version, before = published.get(key, (0, ()))
            now = tuple(counts)
            if now != before:
                out.append(Rate(key[0], key[1], width, key[3], version + 1, now))
    return out


def pending(
    since_ms: int | None, first_ms: int | None, clock: int | None, settings: RatesSettings, most: int = 500
) -> list[int]:
    """The starts of the alert windows to judge, oldest first, at most ``most``: those
    final by ``clock`` after ``since_ms`` (the start of the last one judged), or, when
    none was judged yet, from the one holding ``first_ms`` (the oldest counted)."""
    if clock is None or (since_ms is None and first_ms is None):
        return []
    width = settings.alert_width_ms
    last = window_of(clock - settings.lateness_ms - width, width)
    first = since_ms + width if since_ms is not None else window_of(first_ms or 0, width)
    return list(range(first, min(last, first + (most - 1) * width) + 1, width))
