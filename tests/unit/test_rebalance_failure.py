"""What a rebalance callback raises stops the pipeline: aiokafka logs and swallows a
listener's exception, and the member then waited for an assignment that never came
(PostgreSQL refusing the offsets' read with 42501, say). The input consumer keeps the
error and raises it from the next poll."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from aiokafka import TopicPartition

from replaywatch.exceptions import ServiceRefused
from replaywatch.stream.consumer import InputConsumer


class FakeKafkaConsumer:
    """The calls InputConsumer makes; a rebalance happens inside ``getmany`` (as in
    aiokafka, whose listener exceptions are logged and dropped)."""

    def __init__(self) -> None:
        self.listener: Any = None
        self.rebalance_pending = True

    async def start(self) -> None:
        pass

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.listener = listener

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Any]]:
        if self.rebalance_pending:
            self.rebalance_pending = False
            with contextlib.suppress(Exception):  # what aiokafka does
                await self.listener.on_partitions_assigned({TopicPartition("in", 0)})
        return {}


async def test_an_exception_in_assigned_is_raised_by_the_next_poll() -> None:
    fake = FakeKafkaConsumer()
    consumer = InputConsumer(fake, "in")
    calls: list[set[int]] = []

    async def revoked(partitions: set[int]) -> None:
        calls.append(partitions)

    async def assigned(partitions: set[int]) -> None:
        raise ServiceRefused("PostgreSQL refused to load offsets: 42501 permission denied for table partition_offset")

    await consumer.start(revoked, assigned)
    with pytest.raises(ServiceRefused, match="42501"):
        await consumer.poll(10, 10)


async def test_a_poll_without_a_failure_returns_its_batch() -> None:
    fake = FakeKafkaConsumer()
    consumer = InputConsumer(fake, "in")
    seen: list[set[int]] = []

    async def changed(partitions: set[int]) -> None:
        seen.append(partitions)

    await consumer.start(changed, changed)
    assert await consumer.poll(10, 10) == {}
    assert seen == [{0}]
