"""How long replaywatch keeps what it stores, and the pruning that holds it to that.

Three settings, in days (0: kept forever):

- ``REPLAYWATCH_RETAIN_COMPARISONS_DAYS``: the comparison history (``report``, the web
  view, and the "already said" check of backfills and re-scorings);
- ``REPLAYWATCH_RETAIN_STEPS_DAYS``: the projection of a step not updated for that long
  (its run is over); a later attempt of it starts a new pair;
- ``REPLAYWATCH_RETAIN_RULE_STATS_DAYS``: an ignore rule's statistics not updated for
  that long;
- ``REPLAYWATCH_RETAIN_RATES_DAYS``: the rates' windows, published windows and alerts
  whose event time is that old.

Every consumer prunes every ``REPLAYWATCH_PRUNE_EVERY_SECONDS``, in transactions of at
most ``BATCH`` rows, so that pruning never holds a lock the live commit waits on for
long. The outbox prunes itself (the publisher), and the diffs in S3 are content
addressed and shared by comparisons: they expire by the bucket's lifecycle rule.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Final

from replaywatch.exceptions import ReplaywatchError
from replaywatch.ports import Store

logger = logging.getLogger(__name__)

BATCH: Final = 5000
"""Rows deleted in one transaction."""
DAY: Final = 86_400.0


@dataclass(frozen=True)
class Retention:
    comparisons_days: float = 0.0
    steps_days: float = 0.0
    rule_stats_days: float = 0.0
    every_seconds: float = 300.0
    rates_days: float = 0.0

    def tables(self) -> list[tuple[str, str, float]]:
        """(table, its time column, seconds kept) of what is pruned at all."""
        kept = [
            ("comparison", "detected_at", self.comparisons_days),
            ("step_projection", "updated_at", self.steps_days),
            ("ignore_rule_stats", "updated_at", self.rule_stats_days),
            ("rate_window", "start_ms", self.rates_days),
            ("rate_published", "start_ms", self.rates_days),
            ("rate_alert", "opened_ms", self.rates_days),
        ]
        return [(table, column, days * DAY) for table, column, days in kept if days > 0]


async def prune_once(store: Store, retention: Retention, batch: int = BATCH) -> dict[str, int]:
    """Delete what is older than the retention, table by table, ``batch`` rows a
    transaction; the rows deleted, by table."""
    deleted: dict[str, int] = {}
    for table, column, seconds in retention.tables():
        total = 0
        while True:
            n = await store.prune(table, column, seconds, batch)
            total += n
            if n < batch:
                break
            await asyncio.sleep(0)  # the live commit goes between two transactions
        deleted[table] = total
    return deleted


async def keep_pruning(store: Store, retention: Retention) -> None:
    """Prune now and then, for as long as the consumer runs (cancelled on its stop); a
    failed round is logged and tried again at the next."""
    if not retention.tables():
        return
    while True:
        try:
            deleted = await prune_once(store, retention)
            if any(deleted.values()):
                logger.info("pruned what is past its retention: %s", deleted)
        except ReplaywatchError as exc:
            logger.warning("pruning failed (%s); trying again in %.0fs", exc, retention.every_seconds)
        await asyncio.sleep(retention.every_seconds)
