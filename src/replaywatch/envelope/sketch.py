"""Fixed-bin histograms: the envelopes' sketches.

A histogram's bins are fixed by its scale, so two histograms of one scale merge by
adding their counts: merging is exact, associative and commutative, and a histogram
learned in batches equals the one learned at once. Its size is bounded by its scale
(50 bins for scores, 23 for relative deltas), whatever it has counted. Quantiles are
read on bin edges, on the cautious side: ``low`` is the lower edge of the bin holding
the quantile, ``high`` the upper edge.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Final

SCORE_EDGES: Final = tuple(round(i / 50, 2) for i in range(51))
"""Scores in [0, 1], in bins of 0.02 (a score of 1 counts in the last bin)."""
DELTA_EDGES: Final = (
    0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 100.0, math.inf,
)  # fmt: skip
"""Relative deltas (|new - old| / |old|), finer where benign jitter lives."""
SCALES: Final = {"score": SCORE_EDGES, "delta": DELTA_EDGES}


@dataclass
class Histogram:
    """Counts of values in the bins of one scale (``SCALES``)."""

    scale: str
    counts: list[int] = field(default_factory=list)
    _quantiles: dict[tuple[str, int], float | None] = field(default_factory=dict, compare=False, repr=False)
    """Quantiles read since the last ``add`` (a cohort's envelope is read far more often
    than it changes once it is warm)."""

    total: int = field(default=0, init=False, compare=False)
    """How many values it counted (the sum of ``counts``)."""

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * (len(SCALES[self.scale]) - 1)
        self.total = sum(self.counts)

    def bin_of(self, value: float) -> int:
        edges = SCALES[self.scale]
        if not value >= edges[0]:  # NaN, or below the scale
            return 0
        return min(bisect.bisect_right(edges, value) - 1, len(edges) - 2)

    def add(self, value: float) -> None:
        self.counts[self.bin_of(value)] += 1
        self.total += 1
        self._quantiles.clear()

    def merge(self, other: Histogram) -> Histogram:
        if other.scale != self.scale:
            raise ValueError(f"cannot merge a {other.scale} histogram into a {self.scale} one")
        return Histogram(self.scale, [a + b for a, b in zip(self.counts, other.counts, strict=True)])

    def low(self, per_mille: int) -> float | None:
        """The lower edge of the bin holding the ``per_mille``/1000 quantile (None: empty)."""
        key = ("low", per_mille)
        if key not in self._quantiles:
            self._quantiles[key] = self._low(per_mille)
        return self._quantiles[key]

    def high(self, per_mille: int) -> float | None:
        """The upper edge of the bin holding the (1000 - ``per_mille``)/1000 quantile."""
        key = ("high", per_mille)
        if key not in self._quantiles:
            self._quantiles[key] = self._high(per_mille)
        return self._quantiles[key]

    def _low(self, per_mille: int) -> float | None:
        total = self.total
        if not total:
            return None
        seen = 0
        for i, n in enumerate(self.counts):
            seen += n
            if seen * 1000 > per_mille * total:
                return SCALES[self.scale][i]
        return SCALES[self.scale][-2]  # pragma: no cover - the loop always returns

    def _high(self, per_mille: int) -> float | None:
        total = self.total
        if not total:
            return None
        seen = 0
        for i in range(len(self.counts) - 1, -1, -1):
            seen += self.counts[i]
            if seen * 1000 > per_mille * total:
                return SCALES[self.scale][i + 1]
        return SCALES[self.scale][1]  # pragma: no cover

    def to_json(self) -> dict[str, int]:
        """Sparse: bin index (as text) to count."""
        return {str(i): n for i, n in enumerate(self.counts) if n}

    @classmethod
    def from_json(cls, scale: str, doc: dict[str, int]) -> Histogram:
        counts = [0] * (len(SCALES[scale]) - 1)
        for i, n in doc.items():
            counts[int(i)] = int(n)
        return cls(scale, counts)
