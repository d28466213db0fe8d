"""A replay's progress per partition: done and total, rate, ETA.

On a terminal, a live display (rich); otherwise a log line every ``LOG_EVERY`` seconds,
so that a job's log says how far it got.
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import TracebackType
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

if TYPE_CHECKING:
    from replaywatch.pipeline import Pipeline

logger = logging.getLogger(__name__)

Ranges = dict[int, tuple[int, int]]
LOG_EVERY = 10.0
REFRESH = 0.5
"""Seconds between two refreshes of the display."""


class ReplayProgress:
    def __init__(self, what: str, ranges: Ranges, resumed_from: dict[int, int], *, live: bool | None = None) -> None:
        self.what = what
        self.ranges = ranges
        self._base = {p: max(first, resumed_from.get(p, first)) for p, (first, _) in ranges.items()}
        self._done = dict(self._base)
        self._started = time.monotonic()
        self._logged = self._started
        console = Console(stderr=True)
        self._live = console.is_terminal if live is None else live
        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>9} rec/s"),
            TimeRemainingColumn(),
            console=console,
            disable=not self._live,
        )
        self._tasks: dict[int, TaskID] = {}

    def __enter__(self) -> ReplayProgress:
        self._bar.start()
        for p, (first, end) in sorted(self.ranges.items()):
            done = self._base[p] - first
            self._tasks[p] = self._bar.add_task(f"{self.what} p{p}", total=end - first, completed=done, rate="-")
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._bar.stop()

    def update(self, committed: dict[int, int]) -> None:
        """``committed``: each partition's next offset, as committed so far."""
        now = time.monotonic()
        for p, offset in committed.items():
            if p in self.ranges:
                self._done[p] = min(max(self._done[p], offset), self.ranges[p][1])
        elapsed = max(now - self._started, 1e-9)
        for p, task in self._tasks.items():
            first = self.ranges[p][0]
            rate = (self._done[p] - self._base[p]) / elapsed
            self._bar.update(task, completed=self._done[p] - first, rate=f"{rate:,.0f}")
        if not self._live and now - self._logged >= LOG_EVERY:
            self._logged = now
            logger.info("%s: %s", self.what, self.line())

    @property
    def records(self) -> int:
        """Offsets covered by this run (not counting what a resumed job had done)."""
        return sum(self._done[p] - self._base[p] for p in self.ranges)

    @property
    def total(self) -> int:
        return sum(end - first for first, end in self.ranges.values())

    @property
    def done(self) -> int:
        return sum(self._done[p] - first for p, (first, _) in self.ranges.items())

    def line(self) -> str:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = self.records / elapsed
        left = self.total - self.done
        eta = f"{left / rate:,.0f}s" if rate > 0 else "-"
        return f"{self.done:,}/{self.total:,} offsets, {rate:,.0f}/s, ETA {eta}"

    def seconds(self) -> float:
        return time.monotonic() - self._started


async def run_with_progress(what: str, pipeline: Pipeline, ranges: Ranges, resumed_from: dict[int, int],
                            stop: asyncio.Event) -> ReplayProgress:  # fmt: skip
    """Run a replay's pipeline until its range is read (or ``stop``), showing progress."""
    with ReplayProgress(what, ranges, resumed_from) as progress:

        async def refresh() -> None:
            while True:
                await asyncio.sleep(REFRESH)
                progress.update(pipeline.checkpoint.committed)

        refresher = asyncio.create_task(refresh())
        try:
            await pipeline.run(stop)
        finally:
            refresher.cancel()
            progress.update(pipeline.checkpoint.committed)
    return progress
