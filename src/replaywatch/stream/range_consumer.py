"""A bounded reader of the input topic for replays (backfill, re-scoring, rebuild).

It reads each partition's range [start, end) with partitions assigned by hand, so no
consumer group is joined and the live group's offsets are never touched. It offers the
pipeline the same surface as ``InputConsumer``: positions, seeks to the offsets stored
in PostgreSQL (a replay job's checkpoint), and ``finished()`` once every partition
has been read to its end.

A partition is read to its end when the fetch position reaches the end offset: the
last offsets of a range may be transaction markers, which are never handed out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition

from replaywatch.config import Settings
from replaywatch.core.types import Batch, Partition, Record
from replaywatch.exceptions import TransientError
from replaywatch.stream.kafka_client import client_options, fetch_options
from replaywatch.stream.kafka_errors import translate_kafka_errors

logger = logging.getLogger(__name__)

Ranges = dict[int, tuple[int, int]]
"""partition -> (first offset, end offset): the records [first, end) are read."""


def reader(settings: Settings) -> AIOKafkaConsumer:
    """A consumer outside any group, reading committed records only, with the live
    consumer's connection and fetch options."""
    return AIOKafkaConsumer(
        **client_options(settings),
        **fetch_options(settings),
        group_id=None,
        enable_auto_commit=False,
        isolation_level="read_committed",
    )


class RangeConsumer:
    def __init__(self, consumer: AIOKafkaConsumer, topic: str, ranges: Ranges) -> None:
        self._consumer = consumer
        self.topic = topic
        self.ranges = dict(ranges)
        self.positions: dict[int, int | None] = {}
        """The offset the next batch starts from (None: the job never stored one)."""
        self._read_to_end: set[int] = set()

    async def start(
        self, revoked: Callable[[set[int]], Awaitable[None]], assigned: Callable[[set[int]], Awaitable[None]]
    ) -> None:
        async with translate_kafka_errors("start the replay reader"):
            await self._consumer.start()
        self._consumer.assign([TopicPartition(self.topic, p) for p in sorted(self.ranges)])
        await assigned(set(self.ranges))

    async def stop(self) -> None:
        await asyncio.shield(self._consumer.stop())

    def highwater(self, partition: int) -> int | None:
        return self.ranges[partition][1] if partition in self.ranges else None

    def finished(self) -> bool:
        """Every partition is read to its end and every record read was handed out."""
        return self._read_to_end >= set(self.ranges)

    async def poll(self, timeout_ms: int, max_records: int) -> Batch:
        active = [TopicPartition(self.topic, p) for p in self.ranges if p not in self._read_to_end]
        if not active:
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        try:
            async with translate_kafka_errors("read the range"):
                batch: Batch = await self._consumer.getmany(*active, timeout_ms=timeout_ms, max_records=max_records)
                for tp in active:
                    if tp not in batch and await self._consumer.position(tp) >= self.ranges[tp.partition][1]:
                        self._read_to_end.add(tp.partition)
        except TransientError as exc:
            logger.warning("%s; reading again", exc)
            await asyncio.sleep(0.5)
            return {}
        return batch

    def owned(self, batch: Batch) -> Batch:
        """The records of ``batch`` inside the range and not prepared yet."""
        out: dict[Partition, Sequence[Record]] = {}
        for tp, recs in batch.items():
            if tp.partition not in self.positions:
                continue
            first, end = self.ranges[tp.partition]
            start = self.positions[tp.partition] or first
            kept = [r for r in recs if start <= r.offset < end]
            if kept:
                out[tp] = kept
            if recs[-1].offset + 1 >= end:
                self._read_to_end.add(tp.partition)
                self._consumer.pause(tp)
        return out

    def advance(self, batch: Batch) -> None:
        for tp, recs in batch.items():
            self.positions[tp.partition] = recs[-1].offset + 1

    def seek_to_stored(self, stored: dict[int, int], partitions: set[int]) -> None:
        """Resume from the job's checkpoint (else the range's first offset)."""
        for p in partitions:
            first, end = self.ranges[p]
            self.positions[p] = stored.get(p)
            start = max(first, stored.get(p, first))
            tp = TopicPartition(self.topic, p)
            self._read_to_end.discard(p)
            if start >= end:
                self._read_to_end.add(p)
                continue
            self._consumer.seek(tp, start)
            self._consumer.resume(tp)

    def revoke(self, partitions: set[int]) -> None:
        for p in partitions:
            self.positions.pop(p, None)

    def advise(self, offsets: dict[int, int], *, now: bool = False) -> None:
        """No group to tell: a replay's progress is its checkpoint in PostgreSQL."""

    async def flush_advice(self, wait: float) -> None:
        """No group to tell."""
