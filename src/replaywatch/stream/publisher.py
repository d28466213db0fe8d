"""The outbox publisher: PostgreSQL's outbox -> the output topic, exactly once.

One transactional producer per input partition this consumer owns, with the
transactional id ``{group}.outbox.{input_topic}.{partition}``: the next owner of a
partition fences the last one. Each Kafka transaction carries the events *and* the
publisher's progress (the input offset after the last event published), committed as
the offset of the input partition under the group ``{group}.outbox``. After any
crash the new owner reads that progress, deletes what was already published from the
outbox and publishes the rest, so a ``read_committed`` reader sees each event once.

Kafka expires the offsets of a group without members (the progress group has none)
after ``offsets.retention.minutes``, a week by default. So the position is also kept
in PostgreSQL beside the outbox, with the delete of what was published (now and then,
and whenever a partition goes idle); a start takes the larger of the two.

PostgreSQL's outbox is what survives a crash; in the running process the consumer also
hands each committed write's events to the partition's publisher (``offer``), with
the range of input offsets that write covered. The publisher serves a handoff from
memory only when its range starts where the publisher's knowledge ends (``covered``);
a gap (a write whose handoff never came, say one whose commit reply was lost) sends it
back to the outbox. Reading the outbox, it first reads the partition's committed
offset (the watermark) and then the rows below it, so it never passes over a row it
has not published, and it deletes only rows it has published.

An event larger than the output topic accepts goes to the dead-letter topic (headers
only) in the same transaction, so one event can never stall its partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from replaywatch import telemetry
from replaywatch.core.types import OutboxRow
from replaywatch.exceptions import EventTooLarge, Fenced, GaveUp, ServiceRefused, TransientError
from replaywatch.ports import BatchingProducer, ProducerFactory, ProgressReader
from replaywatch.runtime.retry import Backoff
from replaywatch.stream.deadletter import dead_letter_headers
from replaywatch.stream.kafka_errors import translate_kafka_errors
from replaywatch.stream.partitioning import KeyPartitions

logger = logging.getLogger(__name__)

BATCH = 2000
READ_BYTES = 16 * 1024 * 1024
"""Event bytes read from the outbox at once (one row more when a single event is larger)."""
DELETE_EVERY = 1.0
RECORD_OVERHEAD = 512
"""Bytes a record takes in a batch besides its key, value and headers (with margin)."""


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class OutboxSource(Protocol):
    """What the publisher reads of PostgreSQL."""

    async def load_offsets(self, partitions: set[int]) -> dict[int, int]: ...

    async def outbox_fetch(
        self, partition: int, start: int, end: int, limit: int, max_bytes: int = ...
    ) -> list[OutboxRow]: ...

    async def outbox_delete_before(self, partition: int, offset: int) -> None: ...

    async def publisher_position(self, partition: int) -> int | None: ...


@dataclass
class Handoff:
    """One committed write's events of one partition, and the input offsets it covered:
    from ``start`` (None: the partition's first commit) to ``end``."""

    start: int | None
    end: int
    rows: list[OutboxRow]
    size: int


@dataclass
class _Lane:
    """One input partition's publisher state."""

    task: asyncio.Task[None] | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    handoffs: deque[Handoff] = field(default_factory=deque)
    queued_bytes: int = 0
    overflow: bool = False
    """Handoffs were dropped to stay within the memory budget: read the outbox again."""


class OutboxPublisher:
    def __init__(
        self,
        *,
        store: OutboxSource,
        producers: ProducerFactory,
        progress: ProgressReader,
        input_topic: str,
        output_topic: str,
        dlq_topic: str,
        progress_group: str,
        max_message_bytes: int = 1024 * 1024,
        queue_bytes: int = 64 * 1024 * 1024,
        retry: Backoff | None = None,
    ) -> None:
        self._store = store
        self._producers = producers
        self._progress = progress
        self._input = input_topic
        self._output = output_topic
        self._dlq = dlq_topic
        self._progress_group = progress_group
        self._max_message_bytes = max_message_bytes
        self._queue_bytes = queue_bytes
        """Bytes of events kept in memory, over all partitions; beyond, the outbox is read."""
        self._retry = retry or Backoff(asyncio.Event())
        self._lanes: dict[int, _Lane] = {}
        self._keys: KeyPartitions | None = None
        self._failure: ServiceRefused | None = None
        self.published = 0
        self.dead_lettered = 0

    def raise_failure(self) -> None:
        """Raise the refusal that stopped a partition's publishing, if any: Kafka refuses
        us for good, and the process must stop rather than stall that partition."""
        if self._failure is not None:
            raise self._failure

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

    def offer(self, offsets: dict[int, tuple[int | None, int]], rows: list[OutboxRow]) -> None:
        """A write just committed: per partition the input offsets it covered
        (start, end), and its events in source order."""
        by_partition: dict[int, list[OutboxRow]] = {}
        for r in rows:
            by_partition.setdefault(r.partition, []).append(r)
        budget = self._queue_bytes // max(1, len(self._lanes))
        for partition, (start, end) in offsets.items():
            lane = self._lanes.get(partition)
            if lane is None or lane.overflow:
                continue
            mine = by_partition.get(partition, [])
            size = sum(len(r.value) + 200 for r in mine)
            if lane.queued_bytes + size > budget:
                lane.handoffs.clear()
                lane.queued_bytes = 0
                lane.overflow = True
                continue
            lane.handoffs.append(Handoff(start, end, mine, size))
            lane.queued_bytes += size
            lane.idle.clear()
            lane.wake.set()

    def reread(self, partitions: Iterable[int]) -> None:
        """A write committed whose queued events are not known (its reply was lost):
        these partitions read their outbox again instead of waiting for a handoff."""
        for partition in partitions:
            lane = self._lanes.get(partition)
            if lane is None:
                continue
            lane.handoffs.clear()
            lane.queued_bytes = 0
            lane.overflow = True
            lane.idle.clear()
            lane.wake.set()

    async def flush(self, timeout: float) -> bool:
        """Wait until every owned partition's outbox is drained; False on timeout."""
        for lane in self._lanes.values():
            lane.idle.clear()
            lane.wake.set()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(lane.idle.wait() for lane in self._lanes.values()))
            return True
        except TimeoutError:
            return False

    async def close(self) -> None:
        await self.revoke(set(self._lanes))

    async def _run(self, partition: int, lane: _Lane) -> None:
        """Serve the partition until revoked, under the one retry policy; a refusal
        stops the process (``raise_failure``)."""
        try:
            await self._retry.call(lambda: self._serve(partition, lane), f"publisher for partition {partition}")
        except ServiceRefused as exc:
            logger.error("publisher for partition %d stopped: %s", partition, exc)
            self._failure = exc
        except GaveUp:
            pass  # stopping: the next owner publishes what is left

    async def _serve(self, partition: int, lane: _Lane) -> None:
        producer = self._producers(partition)
        try:
            async with translate_kafka_errors("start publisher"):
                await producer.start()
            await self._drain(partition, lane, producer, await self._resume(partition))
        except Fenced as exc:  # another producer took the transactional id: start again (a revoke ends this)
            raise TransientError(f"{exc}; starting the publisher again") from exc
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(producer.stop())

    async def _resume(self, partition: int) -> int:
        """Where the partition's publishing resumes: the larger of Kafka's progress (in the
        transaction of the events, so it is never behind) and PostgreSQL's position (which
        survives the expiry of the progress group's offsets); what is below it is pruned."""
        kafka = await self._progress(partition)
        stored = await self._store.publisher_position(partition)
        done = max((d for d in (kafka, stored) if d is not None), default=None)
        if done is None:
            return 0
        await self._store.outbox_delete_before(partition, done)
        return done

    async def _drain(self, partition: int, lane: _Lane, producer: BatchingProducer, upto: int) -> None:
        """Publish from source offset ``upto`` on: the outbox up to its watermark, then
        the handoffs that continue it, and the outbox again whenever they do not. What
        is published is pruned now and then, and always before the lane goes idle."""
        covered: int | None = None
        """All rows below this input offset are published or known (None: not yet read)."""
        from_outbox = True
        deleted_at = time.monotonic()
        pruned = upto
        while True:
            rows: list[OutboxRow] = []
            if from_outbox:
                lane.overflow = False  # from here on the handoffs are complete again
                watermark = (await self._store.load_offsets({partition})).get(partition)
                if watermark is not None:  # None: never committed, so no row is in the outbox yet
                    rows = await self._store.outbox_fetch(partition, upto, watermark, BATCH, READ_BYTES)
                if len(rows) < BATCH and sum(len(r.value) for r in rows) < READ_BYTES:  # else: more to read
                    from_outbox = False
                    covered = watermark
            elif lane.handoffs:
                taken = _take_handoffs(lane, covered)
                if taken is None:  # a gap: the outbox has what the handoffs miss
                    logger.info("publisher for partition %d: a handoff does not start at %s; reading the outbox",
                                partition, covered)  # fmt: skip
                    from_outbox = True
                    continue
                rows, covered = taken
                rows = [r for r in rows if r.source_offset >= upto]  # never below what is published
            elif lane.overflow:
                from_outbox = True
                continue
            else:
                if upto > pruned:  # idle: prune now, the position is kept whatever happens to Kafka's
                    await self._store.outbox_delete_before(partition, upto)
                    pruned, deleted_at = upto, time.monotonic()
                    continue  # a handoff or a flush may have come during the prune: look again first
                lane.idle.set()
                lane.wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await lane.wake.wait()
                continue
            if not rows:
                continue
            upto = rows[-1].source_offset + 1
            await self._publish(partition, producer, rows, upto)
            # only then forget them (now and then); a crash before this is mended by _progress()
            if time.monotonic() - deleted_at > DELETE_EVERY:
                await self._store.outbox_delete_before(partition, upto)
                pruned, deleted_at = upto, time.monotonic()

    async def _key_partitions(self, producer: BatchingProducer) -> KeyPartitions:
        """The output topic's partitioning, kept while its partitions stay the same."""
        partitions = sorted(await producer.partitions_for(self._output))
        if self._keys is None or self._keys.partitions != partitions:
            self._keys = KeyPartitions(partitions)
        return self._keys

    async def _publish(self, partition: int, producer: BatchingProducer, rows: list[OutboxRow], upto: int) -> None:
        """Events and progress in one Kafka transaction, the events in one batch per
        output partition (the producers' default partitioner picks it, by key, as
        ``send`` would); an event too large for the output topic goes to the
        dead-letter topic in the same transaction."""
        tp = TopicPartition(self._input, partition)
        dead = 0
        started = time.perf_counter()
        async with translate_kafka_errors("publish"), producer.transaction():
            batches = PartitionBatches(producer, self._output, await self._key_partitions(producer))
            for r in rows:
                headers = [("verdict", r.verdict.encode())]
                if r.trace:
                    headers.append((telemetry.TRACEPARENT, r.trace.encode()))
                if r.headers:
                    headers += [(k, v.encode()) for k, v in orjson.loads(r.headers).items()]
                size = len(r.value) + len(r.key or b"") + RECORD_OVERHEAD
                if size <= self._max_message_bytes:
                    await batches.add(r.key, r.value, headers)
                    continue
                dead += 1
                logger.error(
                    "event %s (input %s[%d]@%d) is %d bytes, over %s's max.message.bytes of %d: dead-lettered",
                    r.event_id, self._input, partition, r.source_offset, size, self._output, self._max_message_bytes,
                )  # fmt: skip
                headers = _too_large_headers(r, (self._input, partition), self._output, self._max_message_bytes,
                                             size)  # fmt: skip
                sent = await producer.send(self._dlq, None, key=r.key, headers=headers)
                sent.add_done_callback(_retrieve)
            await batches.send()
            await producer.send_offsets_to_transaction({tp: upto}, self._progress_group)
        self.published += len(rows) - dead
        self.dead_lettered += dead
        telemetry.PUBLISHED.add(len(rows) - dead)
        telemetry.STAGE_SECONDS.record(time.perf_counter() - started, {"stage": "publish"})
        if dead:
            telemetry.record_dead_letters(["too_large"] * dead)


class PartitionBatches:
    """The events of one transaction to ``topic``, one record batch per partition (the
    partition ``keys`` gives the event's key); a full batch goes at once, the rest on
    ``send``. Each partition's events keep the order they were added in."""

    def __init__(self, producer: BatchingProducer, topic: str, keys: KeyPartitions) -> None:
        self._producer, self._topic, self._keys = producer, topic, keys
        self._batches: dict[int, Any] = {}

    async def add(self, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> None:
        partition = self._keys.of(key)
        batch = self._batches.get(partition)
        if batch is None:
            batch = self._batches[partition] = self._producer.create_batch()
        if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:  # full: it goes
            await self._send(partition, batch)
            batch = self._batches[partition] = self._producer.create_batch()
            batch.append(key=key, value=value, timestamp=None, headers=headers)  # a first record always fits

    async def send(self) -> None:
        for partition, batch in self._batches.items():
            await self._send(partition, batch)
        self._batches.clear()

    async def _send(self, partition: int, batch: Any) -> None:
        sent = await self._producer.send_batch(batch, self._topic, partition=partition)
        sent.add_done_callback(_retrieve)  # the transaction's outcome says it all


def _too_large_headers(
    r: OutboxRow, source: tuple[str, int], output: str, limit: int, size: int
) -> list[tuple[str, bytes]]:
    error = EventTooLarge(
        f"the comparison event {r.event_id} ({r.verdict}) is {size} bytes with its key; the output topic "
        f"{output} takes {limit}; raise its max.message.bytes"
    )
    headers = dead_letter_headers(error, (*source, r.source_offset), omitted="too large for the output topic")
    return [*headers, ("replaywatch.event_id", r.event_id.encode())]


def _take_handoffs(lane: _Lane, covered: int | None) -> tuple[list[OutboxRow], int] | None:
    """The next handoff and those queued behind it that continue it, in one transaction
    (under load one transaction per write fell behind: events seconds late), and where
    they end; ([], covered) when the outbox read already covered the next one; None
    when it does not continue what is covered (the queue is dropped: read the outbox)."""
    handoff = lane.handoffs.popleft()
    lane.queued_bytes -= handoff.size
    if covered is not None and handoff.end <= covered:
        return [], covered
    if handoff.start != covered:
        lane.handoffs.clear()
        lane.queued_bytes = 0
        return None
    covered = handoff.end
    rows = list(handoff.rows)
    while lane.handoffs and lane.handoffs[0].start == covered and len(rows) < BATCH:
        more = lane.handoffs.popleft()
        lane.queued_bytes -= more.size
        covered = more.end
        rows += more.rows
    return rows, covered


def kafka_producers(config: dict[str, Any], group: str, input_topic: str, max_message_bytes: int) -> ProducerFactory:
    """A transactional producer per input partition, ``{group}.outbox.{topic}.{partition}``:
    the next owner of a partition fences the last."""

    def make(partition: int) -> BatchingProducer:
        producer: BatchingProducer = AIOKafkaProducer(
            **config,
            transactional_id=f"{group}.outbox.{input_topic}.{partition}",
            acks="all",
            linger_ms=5,
            max_batch_size=min(1 << 20, max_message_bytes),
            max_request_size=max(1 << 20, max_message_bytes + RECORD_OVERHEAD),
        )
        return producer

    return make


def kafka_progress(admin: AIOKafkaAdminClient, input_topic: str, progress_group: str) -> ProgressReader:
    """The publisher's progress of a partition as Kafka holds it: the offset committed
    under the progress group in the transaction of the events (None: none)."""

    async def read(partition: int) -> int | None:
        tp = TopicPartition(input_topic, partition)
        async with translate_kafka_errors("read publisher progress"):
            offsets = await admin.list_consumer_group_offsets(progress_group, partitions=[tp])
        meta = offsets.get(tp)
        return None if meta is None or meta.offset < 0 else int(meta.offset)

    return read
