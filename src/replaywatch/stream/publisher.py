"""The outbox publisher: PostgreSQL's outbox -> the output topic, exactly once.

One transactional producer per input partition this consumer owns, with the
transactional id ``{group}.outbox.{input_topic}.{partition}``: the next owner of a
partition fences the last one. Each Kafka transaction carries the events *and* the
publisher's progress (the input offset after the last event published), committed as
the offset of the input partition under the group ``{group}.outbox``. After any
crash the new owner reads that progress, deletes what was already published from the
outbox and publishes the rest, so a ``read_committed`` reader sees each event once.

PostgreSQL's outbox is what survives a crash; in the running process the consumer also
hands each committed batch's events straight to the partition's publisher
(``offer``), so the steady state reads nothing back from PostgreSQL. A publisher first
catches up from the outbox, from its progress on, then serves what is offered, skipping
what it has published already. Published rows are deleted from the outbox at most once
a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from replaywatch.exceptions import Fenced, TransientError
from replaywatch.store.postgres import OutboxRow, PostgresStore
from replaywatch.stream.kafka_errors import translate_errors

logger = logging.getLogger(__name__)

BATCH = 2000
QUEUE_LIMIT = 50_000
"""Events offered and not yet published, per partition, kept in memory; beyond that the
publisher forgets them and reads the outbox again when it catches up."""
DELETE_EVERY = 1.0


@dataclass
class _Lane:
    """One input partition's publisher state."""

    task: asyncio.Task[None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    queue: list[OutboxRow] = field(default_factory=list)
    """Events offered and not yet published, in source order."""
    overflow: bool = False
    """The queue was dropped: the outbox must be read again."""


class OutboxPublisher:
    def __init__(
        self,
        *,
        store: PostgresStore,
        admin: AIOKafkaAdminClient,
        bootstrap: str,
        input_topic: str,
        output_topic: str,
        group_id: str,
        progress_group: str,
    ) -> None:
        self._store = store
        self._admin = admin
        self._bootstrap = bootstrap
        self._input = input_topic
        self._output = output_topic
        self._group = group_id
        self._progress_group = progress_group
        self._lanes: dict[int, _Lane] = {}
        self.published = 0

    def assign(self, partitions: set[int]) -> None:
        for p in partitions - self._lanes.keys():
            lane = self._lanes[p] = _Lane()
            lane.wake.set()
            lane.task = asyncio.create_task(self._run(p, lane), name=f"publisher-{p}")

    async def revoke(self, partitions: set[int]) -> None:
        tasks = [lane.task for p in partitions if (lane := self._lanes.pop(p, None)) and lane.task]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def offer(self, rows: list[OutboxRow]) -> None:
        """Events just committed to the outbox, in source order per partition."""
        for r in rows:
            lane = self._lanes.get(r.partition)
            if lane is None:
                continue
            if len(lane.queue) >= QUEUE_LIMIT:
                lane.queue.clear()
                lane.overflow = True
            if not lane.overflow:
                lane.queue.append(r)

    def wake(self, partitions: set[int]) -> None:
        for p in partitions:
            if (lane := self._lanes.get(p)) is not None:
                lane.idle.clear()
                lane.wake.set()

    async def flush(self, timeout: float) -> bool:
        """Wait until every owned partition's outbox is drained; False on timeout."""
        self.wake(set(self._lanes))
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(lane.idle.wait() for lane in self._lanes.values()))
            return True
        except TimeoutError:
            return False

    async def close(self) -> None:
        await self.revoke(set(self._lanes))

    async def _progress(self, partition: int) -> int | None:
        tp = TopicPartition(self._input, partition)
        async with translate_errors("read publisher progress"):
            offsets = await self._admin.list_consumer_group_offsets(self._progress_group, partitions=[tp])
        meta = offsets.get(tp)
        return None if meta is None or meta.offset < 0 else int(meta.offset)

    async def _run(self, partition: int, lane: _Lane) -> None:
        delay = 0.2
        while True:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                transactional_id=f"{self._group}.outbox.{self._input}.{partition}",
                acks="all",
                linger_ms=5,
                max_batch_size=1 << 20,
            )
            try:
                async with translate_errors("start publisher"):
                    await producer.start()
                done = await self._progress(partition)
                if done is not None:
                    await self._store.outbox_delete_before(partition, done)
                await self._drain(partition, lane, producer, done or 0)
            except (TransientError, Fenced) as exc:
                logger.warning("publisher for partition %d: %s; retrying in %.1fs", partition, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.shield(producer.stop())

    async def _drain(self, partition: int, lane: _Lane, producer: AIOKafkaProducer, upto: int) -> None:
        """Publish from source offset ``upto`` on: the outbox first, then what is offered."""
        queue = lane.queue
        tp = TopicPartition(self._input, partition)
        from_outbox = True
        deleted_at = time.monotonic()
        while True:
            if from_outbox:
                lane.overflow = False  # from here on the queue is complete again
                rows = await self._store.outbox_fetch(partition, upto, BATCH)
                from_outbox = len(rows) == BATCH
            else:
                rows = [r for r in queue[:BATCH] if r.source_offset >= upto]
                del queue[:BATCH]
            if not rows:
                if queue or lane.overflow:
                    from_outbox = lane.overflow
                    continue
                lane.idle.set()
                lane.wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await lane.wake.wait()
                continue
            upto = rows[-1].source_offset + 1
            # events and progress in one Kafka transaction
            async with translate_errors("publish"), producer.transaction():
                for r in rows:
                    await producer.send(self._output, r.value, key=r.key, headers=[("verdict", r.verdict.encode())])
                await producer.send_offsets_to_transaction({tp: upto}, self._progress_group)
            self.published += len(rows)
            # only then forget them (now and then); a crash before this is mended by _progress()
            if time.monotonic() - deleted_at > DELETE_EVERY:
                await self._store.outbox_delete_before(partition, upto)
                deleted_at = time.monotonic()
