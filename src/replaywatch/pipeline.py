"""The streaming pipeline, wired in one place: poll -> prepare -> write -> publish.

- poll: the input consumer hands out the records of the partitions it owns (``stream.consumer``);
- prepare: decode, load projections, compare, upload diffs, encode events (``prepare``);
- write: dead letters, then one fenced PostgreSQL statement per group of batches (``commit.writer``);
- publish: the outbox publisher moves committed events to the output topic (``stream.publisher``).

Batch N+1 is prepared while batch N is written. PostgreSQL is the commit point: when a
write does not commit (fenced, refused, or given up to stop), every batch after it is
void and each partition resumes from the offset PostgreSQL holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

from replaywatch import telemetry
from replaywatch.config import Settings
from replaywatch.core.batch import split_by_bytes
from replaywatch.exceptions import BadRecordError, Fenced, ReplaywatchError
from replaywatch.ports import DeadLetterSink, DiffStore, Source
from replaywatch.runtime.adapters import open_adapters
from replaywatch.runtime.retry import Backoff, GaveUp
from replaywatch.stages.prepare import Preparer
from replaywatch.stages.writer import PreparedBatch, Rewind, Writer
from replaywatch.state.cache import StepCache
from replaywatch.state.projections import Projections
from replaywatch.state.rule_stats import IgnoreRuleStats
from replaywatch.store.postgres import BatchCommit
from replaywatch.store.retention import keep_pruning
from replaywatch.stream.consumer import Batch, InputConsumer
from replaywatch.stream.publisher import RECORD_OVERHEAD
from replaywatch.telemetry.health import Health

logger = logging.getLogger(__name__)

BACKLOG_EVERY = 5.0
"""Seconds between two counts of the outbox (the backlog gauge)."""
UNWRITTEN_RECORDS = 4000
"""Records prepared and not yet committed before the consumer waits (their bytes are
bounded too: REPLAYWATCH_INFLIGHT_MB)."""


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        *,
        consumer: Callable[[Settings], Any] = InputConsumer.create,
        diffs: DiffStore | None = None,
        dead_letters: DeadLetterSink | None = None,
        publish: bool = True,
    ) -> None:
        """The live service by default. A replay (``replay/``) reads a range with its own
        consumer and ends when the range is read; it may keep diffs and dead letters to
        itself, and a rebuild publishes nothing."""
        self.settings = settings
        self._consumer_factory, self._diffs, self._dead_letters = consumer, diffs, dead_letters
        self._publish = publish
        self.committed: dict[int, int] = {}
        """Each partition's offset committed to PostgreSQL by this process (progress)."""
        self.compared = 0
        self.health = Health(settings.ready_stall_seconds)
        self._backlog: int | None = None
        self.completed = False
        """A replay read its whole range, committed it and published it all."""
        self.processed = 0
        self.ready = asyncio.Event()
        self._assigned = asyncio.Event()
        self._lock = asyncio.Lock()
        self._refused: dict[Source, BadRecordError] = {}
        """Records a service refused for good: dead-lettered when they are read again."""
        self._stop = asyncio.Event()
        self._retry = Backoff(self._stop)

    async def run(self, stop: asyncio.Event) -> None:
        settings, self._stop, self._retry = self.settings, stop, Backoff(stop)
        async with AsyncExitStack() as stack:
            adapters = await open_adapters(settings, stack, self._retry, consumer=self._consumer_factory,
                                           diffs=self._diffs, dead_letters=self._dead_letters)  # fmt: skip
            self._store, self.publisher, self.consumer = adapters.store, adapters.publisher, adapters.consumer
            config = settings.compare_config()
            self.rule_stats = IgnoreRuleStats(config)
            cache = StepCache(settings.cache_steps, settings.cache_mb * 1024 * 1024)
            self.projections = Projections(cache, adapters.store, config)
            self.writer = Writer(store=adapters.store, diffs=adapters.artifacts, dead_letters=adapters.dead_letters,
                                 retry=self._retry, on_commit=self._committed, topic=settings.input_topic,
                                 group=settings.group_id)  # fmt: skip
            self.preparer = Preparer(projections=self.projections, diffs=adapters.artifacts, writer=self.writer,
                                     config=config, limits=settings.limits(), refused=self._refused,
                                     event_bytes=adapters.output_limit - RECORD_OVERHEAD, topic=settings.input_topic,
                                     group=settings.group_id, schemas=adapters.schemas,
                                     output_schema_id=adapters.output_schema_id,
                                     public_url=settings.public_url)  # fmt: skip
            await self._retry.call(lambda: self.consumer.start(self.revoked, self.assigned), "join the group")
            stack.push_async_callback(self.consumer.stop)
            stack.callback(telemetry.watch(self.lag, lambda: self._backlog))
            backlog = asyncio.create_task(self._count_backlog())
            stack.callback(backlog.cancel)
            if self._publish:  # the live consumer and backfills prune; a rebuild's scratch schema does not
                pruning = asyncio.create_task(keep_pruning(adapters.store, settings.retention()))
                stack.callback(pruning.cancel)
            stack.push_async_callback(self._store_rule_counts)  # last: what the drain committed
            member = f" (static member {settings.instance_id})" if settings.instance_id else ""
            logger.info("replaywatch consuming %s as group %s%s", settings.input_topic, settings.group_id, member)
            self.ready.set()
            while not stop.is_set():
                if self.consumer.finished():  # a replay read its range: done once it is all written
                    async with self._lock:
                        await self._settle(0)
                    if self.consumer.finished():  # else a write did not commit: read again
                        break
                    continue
                batch = await self.consumer.poll(settings.batch_timeout_ms, settings.batch_size)
                self.publisher.raise_failure()
                if not batch and not self.writer.records:
                    self.health.progressed()  # nothing to do is not a stall
                for part in split_by_bytes(batch, settings.batch_max_mb * 1024 * 1024):
                    await self.process_batch(part)
                if not batch and self.writer.head_done():
                    async with self._lock:
                        await self._settle(UNWRITTEN_RECORDS)
            await self._drain()

    @property
    def owned_partitions(self) -> set[int]:
        return set(self.consumer.positions) if self._assigned.is_set() else set()

    def lag(self) -> dict[int, int]:
        """Each owned partition's records between its committed offset (0 when none was
        ever committed) and its high-water mark as of the last fetch."""
        out = {}
        for p in self.owned_partitions:
            high = self.consumer.highwater(p)
            if high is not None:
                out[p] = max(0, high - self.committed.get(p, 0))
        return out

    def readiness(self) -> tuple[bool, str]:
        return self.health.readiness(self.lag())

    async def _count_backlog(self) -> None:
        """Every 5 s: the outbox backlog gauge (events committed and not yet published),
        and the ignore-rule counts added to PostgreSQL."""
        while True:
            with contextlib.suppress(ReplaywatchError):
                self._backlog = await self._store.outbox_count(self.owned_partitions)
            await self._store_rule_counts()
            await asyncio.sleep(BACKLOG_EVERY)

    async def _store_rule_counts(self) -> None:
        rows = self.rule_stats.take()
        try:
            await self._store.add_rule_counts(rows)
        except ReplaywatchError:
            self.rule_stats.give_back(rows)  # statistics: stored with the next ones

    async def process_batch(self, batch: Batch) -> None:
        """Prepare the batch on top of those before it, then queue its write."""
        await self._assigned.wait()
        async with self._lock:
            owned = self.consumer.owned(batch)
            if not owned:
                return
            expected = {tp.partition: self.consumer.positions[tp.partition] for tp in owned}
            try:
                prepared = await self._retry.call(lambda: self.preparer.prepare(owned, expected), "prepare a batch")
            except GaveUp as exc:
                logger.error("%s (nothing was committed)", exc)
                return
            self.consumer.advance(owned)
            if await self._settle(UNWRITTEN_RECORDS):  # else a write before it failed: it is void
                self.writer.enqueue(prepared)

    async def _settle(self, keep: int) -> bool:
        """Let writes commit until at most ``keep`` records wait. False when a write did
        not commit: then every partition resumes from PostgreSQL. Call with the lock."""
        failure = await self.writer.settle(keep, self.settings.inflight_mb * 1024 * 1024 if keep else 0)
        if failure is None:
            return True
        if isinstance(failure, GaveUp):
            logger.error("%s; the batches in flight were not committed", failure)
            return False
        if isinstance(failure, Rewind):
            self._refused.update(failure.refused)
            logger.warning("%d records were refused for good (%s); they are dead-lettered and the rest re-read",
                           len(failure.refused), next(iter(failure.refused.values())))  # fmt: skip
        elif isinstance(failure, Fenced):
            logger.warning("%s; resuming every partition from PostgreSQL", failure)
        owned = set(self.consumer.positions)
        self.projections.drop_partitions(owned)
        try:
            stored = await self._retry.call(lambda: self._store.load_offsets(owned), "load offsets")
        except GaveUp:
            return False  # stopping: the next owner resumes from PostgreSQL
        self.consumer.seek_to_stored(stored, owned)
        return False

    def _committed(self, group: list[PreparedBatch], commit: BatchCommit) -> None:
        """A write committed: its projections are the committed ones, the publisher gets
        its events, and Kafka's group hears of the offsets."""
        for b in group:
            self.projections.committed(b.seq, b.result.projections)
            self.processed += b.records
            self.compared += len(b.result.emitted)
            emitted, providers = b.result.emitted, b.result.providers
            telemetry.record_batch(b.records, [(c.verdict.value, providers.get(c.event_id)) for _, _, c in emitted],
                                   ((b.detected_at_ms - occurred) / 1000 for _, occurred, _ in emitted))  # fmt: skip
        counts, warnings = self.rule_stats.observe(c for b in group for _, _, c in b.result.emitted)
        telemetry.record_rule_counts(counts)
        for warning in warnings:
            logger.warning(warning)
        ends = {p: end for p, (_, end) in commit.offsets.items()}
        self.committed.update(ends)
        self.health.progressed()
        self._forget_refused(lambda source: source[0] in ends and source[1] < ends[source[0]])
        self.consumer.advise(ends)
        if commit.said is None:  # the reply was lost: what the commit queued is in the outbox
            self.publisher.reread(commit.offsets)
        else:
            self.publisher.offer(commit.offsets, commit.queued())

    def _forget_refused(self, gone: Callable[[Source], bool]) -> None:
        for source in [s for s in self._refused if gone(s)]:
            del self._refused[source]

    async def revoked(self, partitions: set[int]) -> None:
        """Let the writes in flight finish, then forget these partitions."""
        self._assigned.clear()
        self.health.assigned = False
        async with self._lock:
            await self._settle(0)
            await self.consumer.flush_advice(self.settings.shutdown_seconds / 4)
            self.consumer.revoke(partitions)
            self._forget_refused(lambda source: source[0] in partitions)
            self.writer.forget(lambda source: source[0] in partitions)
            self.projections.drop_partitions(partitions)
        await self.publisher.revoke(partitions)
        if partitions:
            logger.info("partitions revoked: %s", sorted(partitions))

    async def assigned(self, partitions: set[int]) -> None:
        """Resume each partition from the offset stored in PostgreSQL."""
        stored = await self._retry.call(lambda: self._store.load_offsets(partitions), "load offsets")
        async with self._lock:
            self.consumer.seek_to_stored(stored, partitions)
            self.committed = {p: o for p, o in self.committed.items() if p in self.consumer.positions} | stored
        if self._publish:
            self.publisher.assign(partitions)
        self._assigned.set()
        self.health.assigned = True
        self.health.progressed()
        if partitions:
            logger.info("partitions assigned: %s (stored offsets %s)", sorted(partitions), stored)

    async def _drain(self) -> None:
        """Stopping: finish the writes in flight, publish what is committed, then leave."""
        async with self._lock:
            await asyncio.shield(self._settle(0))
        await asyncio.shield(self.consumer.flush_advice(self.settings.shutdown_seconds / 4))
        drained = await asyncio.shield(self.publisher.flush(self.settings.shutdown_seconds / 2))
        while not drained and self.consumer.finished() and not self._stop.is_set():
            drained = await self.publisher.flush(1.0)  # a replay that read its range: publish it all
        self.completed = self.consumer.finished() and drained and not self.writer.records
        logger.info("replaywatch stopping: %d records processed, outbox %s", self.processed,
                    "drained" if drained else "left for the next owner")  # fmt: skip
