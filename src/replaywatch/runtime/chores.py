"""What a running pipeline does on the side: count the outbox's backlog for its gauge
and add the ignore-rule counts to PostgreSQL every few seconds, and prune what is past
its retention."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from contextlib import AsyncExitStack

from replaywatch.exceptions import ReplaywatchError
from replaywatch.ports import Store
from replaywatch.state.rule_stats import IgnoreRuleStats
from replaywatch.store.retention import Retention, keep_pruning

EVERY = 5.0
"""Seconds between two rounds."""


class Backlog:
    """The outbox backlog gauge's figure: events committed and not yet published."""

    def __init__(self) -> None:
        self.count: int | None = None

    def __call__(self) -> int | None:
        return self.count


async def keep_counting(store: Store, owned: Callable[[], set[int]], backlog: Backlog, stats: IgnoreRuleStats) -> None:
    """Every ``EVERY`` seconds: the backlog of the owned partitions, and the rule counts."""
    while True:
        with contextlib.suppress(ReplaywatchError):
            backlog.count = await store.outbox_count(owned())
        await store_rule_counts(store, stats)
        await asyncio.sleep(EVERY)


async def store_rule_counts(store: Store, stats: IgnoreRuleStats) -> None:
    """Add the counts observed since the last call; kept for the next call when
    PostgreSQL is away (statistics: late is fine)."""
    rows = stats.take()
    try:
        await store.add_rule_counts(rows)
    except ReplaywatchError:
        stats.give_back(rows)


def start(
    stack: AsyncExitStack,
    store: Store,
    owned: Callable[[], set[int]],
    stats: IgnoreRuleStats,
    retention: Retention | None,
) -> Backlog:
    """Start the chores for as long as ``stack`` is open (pruning only with a
    ``retention``); the rule counts are stored once more when it closes."""
    backlog = Backlog()
    work = [keep_counting(store, owned, backlog, stats)]
    if retention is not None:
        work.append(keep_pruning(store, retention))
    for task in [asyncio.create_task(chore) for chore in work]:
        stack.callback(task.cancel)
    stack.push_async_callback(lambda: store_rule_counts(store, stats))
    return backlog
