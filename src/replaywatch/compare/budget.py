"""The CPU budget of one record: what keeps a hostile record from holding the event loop.

Every walk of the comparison is linear (or n log n) in its input, but a record at the
contract's limits (16 MB, 1,024 levels) can still take seconds of pure Python. The
walks charge their work here as they go (``spend``: a count of nodes or bytes), and
every ``CHECK_EVERY`` units the thread's CPU time is read (the first read starts the
record's clock): past the deadline, the record raises ``TooCostly`` with the figure,
and its caller dead-letters it.

The budget in force is a module-level value, set by ``limited`` around one record's
comparison: the pure functions take no extra argument, and outside ``limited`` the
budget is unlimited (the CLI, tests, the benches). One thread compares at a time in a
process (the event loop's), so a plain global is enough; ``limited`` restores the
previous value on exit.
"""

from __future__ import annotations

import math
import time
from typing import Final

from replaywatch.exceptions import TooCostly

CHECK_EVERY: Final = 16_384
"""Units of work between two reads of the CPU clock (a read costs ~0.1 µs; 16,384
units are a few milliseconds of walking, so the budget is overrun by no more)."""


class Budget:
    """The CPU deadline of the record being compared, and the work left before the
    clock is read again."""

    __slots__ = ("checks", "deadline", "left", "seconds", "started")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started = -1.0
        """The thread's CPU time at the first check (no clock is read for a record that
        never reaches one: most records; the work before it is ``CHECK_EVERY`` units)."""
        self.deadline = math.inf
        self.left = CHECK_EVERY
        self.checks = 0

    @property
    def spent(self) -> int:
        """Units of work charged so far (the walks' size: what the tests read)."""
        return self.checks * CHECK_EVERY + CHECK_EVERY - self.left

    def spend(self, units: int) -> None:
        """Charge ``units`` of work; raise TooCostly once the CPU deadline has passed."""
        self.left -= units
        if self.left <= 0:
            self.checks += 1
            self.left += CHECK_EVERY
            now = time.thread_time()
            if self.started < 0:
                self.started, self.deadline = now, now + self.seconds
            elif now > self.deadline:
                raise TooCostly(
                    f"comparing this record used {now - self.started:.2f} s of CPU, over the budget of "
                    f"{self.seconds:g} s per record (REPLAYWATCH_RECORD_CPU_SECONDS); the record is "
                    "dead-lettered so that its partition goes on"
                )


UNLIMITED: Final = Budget(math.inf)
current: Budget = UNLIMITED
"""The budget that ``spend`` charges: the record's inside ``limited``, else unlimited."""


def spend(units: int) -> None:
    """Charge ``units`` of work to the budget in force."""
    current.spend(units)


class _Limited:
    """``limited``'s context: a class, not a generator (it is entered once per record)."""

    __slots__ = ("previous", "seconds")

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self.previous = UNLIMITED

    def __enter__(self) -> Budget:
        global current
        self.previous = current
        current = UNLIMITED if self.seconds is None else Budget(self.seconds)
        return current

    def __exit__(self, *exc: object) -> None:
        global current
        current = self.previous


def limited(seconds: float | None) -> _Limited:
    """Run the block under a budget of ``seconds`` of CPU (None: unlimited)."""
    return _Limited(seconds)
