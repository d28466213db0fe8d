"""The input consumer: the group member, the partitions it owns and where each one
stands, seeks to PostgreSQL's offsets, and the advisory offset commits to Kafka.

PostgreSQL holds the truth of where each partition stands; the offsets committed to
Kafka's group follow it at most once a second (and on revoke and stop), for lag tools
and so that a restart's first fetch starts near the right place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from replaywatch.config import Settings
from replaywatch.core.types import Batch, Partition, Record
from replaywatch.exceptions import TransientError
from replaywatch.ports import PartitionsChanged
from replaywatch.stream.kafka_client import client_options, fetch_options
from replaywatch.stream.kafka_errors import translate_kafka_errors

logger = logging.getLogger(__name__)

KAFKA_COMMIT_EVERY = 1.0
"""Seconds between two commits of the group's offsets to Kafka (advisory: for lag tools)."""


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """The pipeline's callbacks on a rebalance. aiokafka logs and swallows what a
    listener raises, and the member would then wait for an assignment that never comes:
    the error is kept here and raised by the next poll instead."""

    def __init__(self, topic: str, revoked: PartitionsChanged, assigned: PartitionsChanged) -> None:
        self._topic = topic
        self._revoked = revoked
        self._assigned = assigned
        self.failure: Exception | None = None

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        try:
            await self._revoked({tp.partition for tp in revoked if tp.topic == self._topic})
        except Exception as exc:
            self.failure = self.failure or exc

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        try:
            await self._assigned({tp.partition for tp in assigned if tp.topic == self._topic})
        except Exception as exc:
            self.failure = self.failure or exc


class InputConsumer:
    def __init__(self, consumer: AIOKafkaConsumer, topic: str) -> None:
        self._consumer = consumer
        self.topic = topic
        self._listener: _Listener | None = None
        self.positions: dict[int, int | None] = {}
        """Owned partitions: the offset the next batch starts from (None: never stored)."""
        self._origins: dict[int, int] = {}
        """Where a partition with no stored offset was first read from since it was
        assigned: a rewind goes back there (there is no stored offset to seek to)."""
        self._advisory: dict[TopicPartition, int] = {}
        self._advised_at = 0.0
        self._advising: asyncio.Task[None] | None = None

    @classmethod
    def create(cls, settings: Settings) -> InputConsumer:
        return cls(
            AIOKafkaConsumer(
                **client_options(settings),
                group_id=settings.group_id,
                group_instance_id=settings.instance_id,
                enable_auto_commit=False,
                auto_offset_reset=settings.auto_offset_reset,
                isolation_level="read_committed",
                max_poll_interval_ms=600_000,
                session_timeout_ms=10_000,
                heartbeat_interval_ms=2_000,
                **fetch_options(settings),
            ),
            settings.input_topic,
        )

    async def start(self, revoked: PartitionsChanged, assigned: PartitionsChanged) -> None:
        async with translate_kafka_errors("start consumer"):
            await self._consumer.start()
        self._listener = _Listener(self.topic, revoked, assigned)
        self._consumer.subscribe([self.topic], listener=self._listener)

    async def stop(self) -> None:
        await asyncio.shield(self._consumer.stop())

    def finished(self) -> bool:
        """The live stream never ends."""
        return False

    def highwater(self, partition: int) -> int | None:
        """The partition's high-water mark as of the last fetch (None: not fetched yet)."""
        high: int | None = self._consumer.highwater(TopicPartition(self.topic, partition))
        return high

    async def poll(self, timeout_ms: int, max_records: int) -> Batch:
        """One poll. Errors the group coordinator reports come out here: a refusal goes
        up (the process stops); anything else is logged and the poll is tried again."""
        batch: Batch = {}
        try:
            async with translate_kafka_errors("consume"):
                batch = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        except TransientError as exc:
            logger.warning("%s; polling again", exc)
            await asyncio.sleep(0.5)
        if self._listener is not None and self._listener.failure is not None:
            raise self._listener.failure  # what a rebalance callback raised: aiokafka would have swallowed it
        return batch

    def owned(self, batch: Batch) -> Batch:
        """The records of ``batch`` this consumer owns and has not prepared yet.

        aiokafka may hand out records fetched before a seek to the stored offset. Those
        start at the offset committed to Kafka, which never passes the one stored in
        PostgreSQL (it is committed after it), so dropping what lies below the position
        leaves exactly the records that follow it.
        """
        owned: dict[Partition, Sequence[Record]] = {}
        for tp, recs in batch.items():
            if tp.partition not in self.positions:
                continue
            start = self.positions[tp.partition]
            if start is not None and recs[0].offset < start:
                recs = [r for r in recs if r.offset >= start]
            if recs:
                owned[tp] = recs
        return owned

    def advance(self, batch: Batch) -> None:
        """The batch is prepared: the next one starts after it."""
        for tp, recs in batch.items():
            if self.positions[tp.partition] is None:
                self._origins.setdefault(tp.partition, recs[0].offset)
            self.positions[tp.partition] = recs[-1].offset + 1

    def seek_to_stored(self, stored: dict[int, int], partitions: set[int]) -> None:
        """Resume ``partitions`` from PostgreSQL's offsets (on assignment, and after a
        write that did not commit)."""
        for p in partitions:
            self.positions[p] = stored.get(p)
            start = stored.get(p, self._origins.get(p))
            if start is not None:
                self._consumer.seek(TopicPartition(self.topic, p), start)

    def revoke(self, partitions: set[int]) -> None:
        self._advisory = {tp: o for tp, o in self._advisory.items() if tp.partition not in partitions}
        for p in partitions:
            self.positions.pop(p, None)
            self._origins.pop(p, None)

    def advise(self, offsets: dict[int, int], *, now: bool = False) -> None:
        """Tell Kafka's group the offsets committed to PostgreSQL, at most once every
        KAFKA_COMMIT_EVERY seconds (or ``now``): an offset commit per batch costs the
        broker more than the batch's fetch."""
        self._advisory.update({TopicPartition(self.topic, p): o for p, o in offsets.items()})
        due = time.monotonic() - self._advised_at >= KAFKA_COMMIT_EVERY
        if not self._advisory or not (now or due) or (self._advising and not self._advising.done()):
            return
        pending, self._advisory = self._advisory, {}
        self._advised_at = time.monotonic()

        async def commit() -> None:
            with contextlib.suppress(Exception):
                await self._consumer.commit(pending)

        self._advising = asyncio.create_task(commit())

    async def flush_advice(self, wait: float) -> None:
        """Commit to Kafka's group now what is committed to PostgreSQL (revoke, stop)."""
        if self._advising is not None:
            await asyncio.wait([self._advising], timeout=wait)
        self.advise({}, now=True)
        if self._advising is not None:
            await asyncio.wait([self._advising], timeout=wait)
