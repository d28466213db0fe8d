"""The streaming pipeline: poll -> prepare -> write -> checkpoint -> publish.

The consumer hands out the records of the partitions this process owns. Each batch is
prepared (decoded, compared with its steps' baselines, encoded) on top of the batches
before it, while they are written: PostgreSQL is the commit point, one fenced statement
per group of batches. What a write committed is applied after it (projections,
consumer, publisher), and the publisher moves its events to the output topic. When a
write does not commit, every batch after it is void and each partition resumes from
the offset PostgreSQL holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

from replaywatch import stages, telemetry
from replaywatch.config import Settings
from replaywatch.core.batch import split_by_bytes
from replaywatch.core.types import Batch
from replaywatch.exceptions import GaveUp
from replaywatch.ports import Consumer, DeadLetterSink, DiffStore
from replaywatch.runtime import chores
from replaywatch.runtime.adapters import Adapters, open_adapters
from replaywatch.runtime.retry import Backoff
from replaywatch.stages.writer import Settled
from replaywatch.stream.consumer import InputConsumer
from replaywatch.telemetry.health import Health

logger = logging.getLogger(__name__)


async def stopped(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait until it has stopped (before what it uses is closed)."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


UNWRITTEN_RECORDS = 4000
"""Records prepared and not yet committed before the consumer waits (their bytes are
bounded too: REPLAYWATCH_INFLIGHT_MB)."""
Opener = Callable[[Settings, AsyncExitStack, Backoff], Awaitable[Adapters]]
Retry = Callable[[asyncio.Event], Backoff]


class Pipeline:
    def __init__(self, settings: Settings, *, consumer: Callable[[Settings], Consumer] = InputConsumer.create,
                 diffs: DiffStore | None = None, dead_letters: DeadLetterSink | None = None, publish: bool = True,
                 open: Opener | None = None, backoff: Retry = Backoff, closes_rates: bool = True) -> None:  # fmt: skip
        """The live service by default. A replay (``replay/``) reads a range with its own
        ``consumer`` and ends when the range is read; it may keep ``diffs`` and
        ``dead_letters`` to itself, and a rebuild publishes nothing. ``open`` and
        ``backoff``: the adapters' opener and the retry policy (tests pass fakes).
        ``closes_rates``: this process may close the rates' windows (the live consumer;
        not a replay)."""
        self.settings, self._publish, self._backoff = settings, publish, backoff
        self._open: Opener = open or (lambda s, stack, retry: open_adapters(
            s, stack, retry, consumer=consumer, diffs=diffs, dead_letters=dead_letters,
            closer=closes_rates))  # fmt: skip
        self.health = Health(settings.ready_stall_seconds)
        self.completed = False
        """A replay read its whole range, committed it and published it all."""
        self._gave_up = False
        self.ready, self._assigned, self._stop, self._lock = (
            asyncio.Event(),
            asyncio.Event(),
            asyncio.Event(),
            asyncio.Lock(),
        )

    async def run(self, stop: asyncio.Event) -> None:
        settings, self._stop = self.settings, stop
        retry = self._backoff(stop)
        async with AsyncExitStack() as stack:
            a = await self._open(settings, stack, retry)
            assert a.consumer is not None, "the pipeline reads with a consumer"
            self.store, self.publisher, self.consumer, self.retry = a.store, a.publisher, a.consumer, retry
            s = self.stages = stages.build(settings, a, retry, self.health)
            self.preparer, self.writer, self.checkpoint = s.preparer, s.writer, s.checkpoint
            await retry.call(lambda: self.consumer.start(self.revoked, self.assigned), "join the group")
            stack.push_async_callback(self.consumer.stop)
            # a rebuild's scratch schema is not pruned; the live consumer's and a backfill's are
            retention = settings.retention() if self._publish else None
            backlog = chores.start(stack, a.store, lambda: self.owned_partitions, s.rule_stats, retention)
            stack.callback(telemetry.watch(self.lag, backlog, lambda: self.readiness()[0]))
            if a.closer is not None:
                stack.push_async_callback(stopped, asyncio.create_task(a.closer.run(), name="close-rates"))
            member = f" (static member {settings.instance_id})" if settings.instance_id else ""
            logger.info("replaywatch consuming %s as group %s%s", settings.input_topic, settings.group_id, member)
            self.ready.set()
            await self._loop(stop)
            await self._drain()

    async def _loop(self, stop: asyncio.Event) -> None:
        settings = self.settings
        while not stop.is_set():
            if self.consumer.finished():  # a replay read its range: done once it is all written
                async with self._lock:
                    await self._settle(0)
                if self.consumer.finished():  # else a write did not commit: read again
                    return
                continue
            batch = await self.consumer.poll(settings.batch_timeout_ms, settings.batch_size)
            self.publisher.raise_failure()
            for committed in self.writer.committed():  # what committed during the poll goes out now
                self.checkpoint.apply(committed)
            if not batch and not self.writer.records:
                self.health.progressed()  # nothing to do is not a stall
            for part in split_by_bytes(batch, settings.batch_max_mb * 1024 * 1024):
                await self.process_batch(part)
            if not batch and self.writer.head_done():
                async with self._lock:
                    await self._settle(UNWRITTEN_RECORDS)

    @property
    def owned_partitions(self) -> set[int]:
        return set(self.consumer.positions) if self._assigned.is_set() else set()

    def lag(self) -> dict[int, int]:
        """Each owned partition's records between its committed offset (0 when none was
        ever committed) and its high-water mark as of the last fetch."""
        committed = self.checkpoint.committed
        highs = {p: self.consumer.highwater(p) for p in self.owned_partitions}
        return {p: max(0, high - committed.get(p, 0)) for p, high in highs.items() if high is not None}

    def readiness(self) -> tuple[bool, str]:
        return self.health.readiness(self.lag())

    async def process_batch(self, batch: Batch) -> None:
        """Prepare the batch on top of those before it, then queue its write."""
        await self._assigned.wait()
        async with self._lock:
            owned = self.consumer.owned(batch)
            if not owned:
                return
            expected = {tp.partition: self.consumer.positions[tp.partition] for tp in owned}
            try:
                prepared = await self.retry.call(lambda: self.preparer.prepare(owned, expected), "prepare a batch")
            except GaveUp as exc:
                logger.error("%s (nothing was committed)", exc)
                return
            self.consumer.advance(owned)
            if await self._settle(UNWRITTEN_RECORDS):  # else a write before it failed: it is void
                self.writer.enqueue(prepared)

    async def _settle(self, keep: int) -> bool:
        """Let writes commit until at most ``keep`` records wait, and apply what they
        committed. False when a write did not commit: then every partition resumes from
        PostgreSQL. Call with the lock."""
        settled: Settled = await self.writer.settle(keep, self.settings.inflight_mb * 1024 * 1024 if keep else 0)
        for committed in settled.committed:
            self.checkpoint.apply(committed)
        voided = settled.voided
        if voided is None:
            return True
        if voided.cause == "stopping":
            self._gave_up = True  # what was read is not all committed: the next run resumes
            logger.error("%s; the batches in flight were not committed", voided.reason)
            return False
        logger.warning("%s; resuming every partition from PostgreSQL", voided.reason)
        owned = set(self.consumer.positions)
        self.stages.projections.void(owned)
        self.stages.envelopes.void(owned)
        self.stages.clocks.void(owned)
        try:
            stored = await self.retry.call(lambda: self.store.load_offsets(owned), "load offsets")
        except GaveUp:
            self._gave_up = True  # stopping: the next owner resumes from PostgreSQL
            return False
        self.consumer.seek_to_stored(stored, owned)
        return False

    async def revoked(self, partitions: set[int]) -> None:
        """Let the writes in flight finish, then forget these partitions."""
        self._assigned.clear()
        self.health.assigned = False
        async with self._lock:
            await self._settle(0)
            await self.consumer.flush_advice(self.settings.shutdown_seconds / 4)
            self.consumer.revoke(partitions)
            self.writer.forget(lambda source: source[0] in partitions)
            self.stages.projections.void(partitions)
            self.stages.envelopes.void(partitions)
            self.stages.clocks.void(partitions)
        await self.publisher.revoke(partitions)
        if partitions:
            logger.info("partitions revoked: %s", sorted(partitions))

    async def assigned(self, partitions: set[int]) -> None:
        """Resume each partition from the offset stored in PostgreSQL."""
        stored = await self.retry.call(lambda: self.store.load_offsets(partitions), "load offsets")
        async with self._lock:
            self.consumer.seek_to_stored(stored, partitions)
            self.checkpoint.resume(self.consumer.positions, stored)
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
        self.completed = self.consumer.finished() and drained and not self.writer.records and not self._gave_up
        logger.info("replaywatch stopping: %d records processed, outbox %s", self.checkpoint.processed,
                    "drained" if drained else "left for the next owner")  # fmt: skip
