"""After the commit point: what a committed write changes everywhere else. The cache
holds its projections as committed, the consumer's group hears of its offsets, the
publisher gets its events, and the counters move. The pipeline, the backfills, the
rebuild and the re-scoring all apply their writes here."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from replaywatch import telemetry
from replaywatch.ports import EventSink, OffsetAdvice
from replaywatch.stages.writer import Committed
from replaywatch.state.projections import Projections
from replaywatch.state.rule_stats import IgnoreRuleStats
from replaywatch.telemetry.health import Health

logger = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Checkpoint:
    publisher: EventSink
    projections: Projections | None = None
    """None: the writes carry no projections (a re-scoring's corrections)."""
    consumer: OffsetAdvice | None = None
    rule_stats: IgnoreRuleStats | None = None
    health: Health | None = None
    committed: dict[int, int] = field(default_factory=dict)
    """Each partition's offset committed to PostgreSQL by this process."""
    processed: int = 0
    compared: int = 0

    def resume(self, owned: Iterable[int], stored: dict[int, int]) -> None:
        """On an assignment: the offsets stored for the partitions just assigned; those of
        the partitions no longer ``owned`` are forgotten."""
        mine = set(owned)
        kept = {p: o for p, o in self.committed.items() if p in mine}
        self.committed.clear()
        self.committed.update(kept | stored)

    def apply(self, c: Committed) -> None:
        for b in c.batches:
            if self.projections is not None:
                self.projections.committed(b.seq, b.result.projections)
            self.processed += b.records
            self.compared += len(b.result.emitted)
            emitted, providers = b.result.emitted, b.result.providers
            telemetry.record_batch(b.records, [(x.verdict.value, providers.get(x.event_id)) for _, _, x in emitted],
                                   ((b.detected_at_ms - occurred) / 1000 for _, occurred, _ in emitted))  # fmt: skip
        if self.rule_stats is not None:
            counts, warnings = self.rule_stats.observe(x for b in c.batches for _, _, x in b.result.emitted)
            telemetry.record_rule_counts(counts)
            for warning in warnings:
                logger.warning(warning)
        self.committed.update(c.ends)
        if self.health is not None:
            self.health.progressed()
        if self.consumer is not None:
            self.consumer.advise(c.ends)
        if c.queued is None:  # the reply was lost: what the commit queued is in the outbox
            self.publisher.reread(c.offsets)
        else:
            self.publisher.offer(c.offsets, c.queued)
