"""A fleet of cohorts simulated at the level of alert windows: how many comparisons
each window holds and how many of them drift, fed to the alert judgment. No service,
no pipeline: what the judgment alone does under the null and under a change."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from replaywatch.rates.alerts import CohortState, judge
from replaywatch.rates.tally import RatesSettings


@dataclass(frozen=True)
class Change:
    cohort: int
    at: int
    """The first alert window at the changed rate."""
    factor: float
    until: int | None = None
    """The first window back at the old rate (None: never)."""


@dataclass
class Outcome:
    cohort_windows: int = 0
    false_alerts: int = 0
    opened: list[tuple[int, int]] = field(default_factory=list)
    """(cohort, window) of each alert opened."""
    resolved: list[tuple[int, int]] = field(default_factory=list)


def fleet(seed: int, cohorts: int = 20, windows: int = 288, change: Change | None = None,
          settings: RatesSettings | None = None, volume: tuple[int, int] = (30, 400),
          rates: tuple[float, float] = (0.02, 0.3)) -> Outcome:  # fmt: skip
    """``cohorts`` cohorts with their own volume (comparisons per window, Poisson) and
    drift rate, over ``windows`` alert windows; with ``change``, one cohort's rate is
    multiplied from a window on (and reverted). An alert opened outside a change's
    span counts as false."""
    s = settings or RatesSettings()
    rng = np.random.default_rng(seed)
    means = rng.integers(volume[0], volume[1], cohorts)
    base = rng.uniform(rates[0], rates[1], cohorts)
    states: dict[tuple[str, str], CohortState] = {}
    names = [f"p{i % 3}|v1|kind{i}" for i in range(cohorts)]
    out = Outcome()
    for w in range(windows):
        window = {}
        for i in range(cohorts):
            rate = base[i]
            changed = change is not None and i == change.cohort and w >= change.at and (
                change.until is None or w < change.until)  # fmt: skip
            if changed:
                assert change is not None
                rate = min(1.0, rate * change.factor)
            n = int(rng.poisson(means[i]))
            window[(names[i], "default")] = (n, int(rng.binomial(n, rate)) if n else 0)
        for t in judge(states, window, w * s.alert_width_ms, s):
            i = names.index(t.cohort)
            w_at = t.start_ms // s.alert_width_ms
            if t.kind == "opened":
                out.opened.append((i, w_at))
                inside = change is not None and i == change.cohort and w_at >= change.at and (
                    change.until is None or w_at < change.until + s.resolve_windows)  # fmt: skip
                out.false_alerts += not inside
            else:
                out.resolved.append((i, w_at))
        out.cohort_windows += cohorts
    return out


def detection_delay(outcome: Outcome, change: Change) -> int | None:
    """Alert windows from the change to the alert on its cohort (0: the first changed
    window raised it); None: never raised."""
    hits = [w - change.at for i, w in outcome.opened if i == change.cohort and w >= change.at]
    return min(hits) if hits else None
