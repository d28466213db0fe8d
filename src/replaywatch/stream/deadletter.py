"""The dead-letter topic: records that break the contract, unchanged, with headers
that say what was wrong and where they came from."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError

from replaywatch import telemetry
from replaywatch.exceptions import BadRecordError
from replaywatch.stream.kafka_errors import translate_kafka_errors

logger = logging.getLogger(__name__)

MAX_MESSAGE_LEN = 1000


def dead_letter_headers(
    error: BadRecordError, source: tuple[str, int, int], *, omitted: str | None = None
) -> list[tuple[str, bytes]]:
    """What was wrong (class, reason, message), where it came from (input topic,
    partition, offset), and why the value is missing, when it is."""
    topic, partition, offset = source
    headers = [
        ("replaywatch.error", type(error).__name__.encode()),
        ("replaywatch.reason", error.reason.encode()),
        ("replaywatch.message", str(error)[:MAX_MESSAGE_LEN].encode("utf-8", "replace")),
        ("replaywatch.source.topic", topic.encode()),
        ("replaywatch.source.partition", str(partition).encode()),
        ("replaywatch.source.offset", str(offset).encode()),
    ]
    if omitted:
        headers.append(("replaywatch.value_omitted", omitted.encode()))
    return headers


def headers_for(record: Any, error: BadRecordError, *, omitted: bool = False) -> list[tuple[str, bytes]]:
    """A bad input record's dead-letter headers, followed by its own headers."""
    headers = dead_letter_headers(
        error, (record.topic, record.partition, record.offset),
        omitted="too large for the dead-letter topic" if omitted else None,
    )  # fmt: skip
    return headers + [(k, v) for k, v in (record.headers or ()) if not k.startswith("replaywatch.")]


class DeadLetters:
    def __init__(self, producer: AIOKafkaProducer, topic: str) -> None:
        self._producer = producer
        self.topic = topic
        self.count = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, client: dict[str, Any], topic: str, max_request_size: int) -> AsyncIterator[DeadLetters]:
        """An idempotent producer for the dead-letter topic, stopped on exit."""
        producer = AIOKafkaProducer(**client, enable_idempotence=True, acks="all", max_request_size=max_request_size)
        async with translate_kafka_errors("start dead-letter producer"):
            await producer.start()
        try:
            yield cls(producer, topic)
        finally:
            await asyncio.shield(producer.stop())

    async def send(self, items: Sequence[tuple[Any, BadRecordError]], acknowledged: set[tuple[int, int]]) -> None:
        """Send every bad record not in ``acknowledged`` (partition, offset) and wait
        until the broker has them. Each one the broker acknowledged is added there, so a
        retried write does not send it again."""
        todo = [(r, e) for r, e in items if (r.partition, r.offset) not in acknowledged]
        if not todo:
            return
        async with translate_kafka_errors("dead-letter"):
            futures = []
            for record, error in todo:
                logger.warning(
                    "dead-lettered %s[%d]@%d: %s (%s)",
                    record.topic,
                    record.partition,
                    record.offset,
                    error.reason,
                    str(error)[:200],
                    extra={"partition": record.partition, "offset": record.offset, "reason": error.reason},
                )
                try:
                    fut = await self._producer.send(
                        self.topic, record.value, key=record.key, headers=headers_for(record, error)
                    )
                except MessageSizeTooLargeError:
                    fut = await self._producer.send(
                        self.topic, None, key=record.key, headers=headers_for(record, error, omitted=True)
                    )
                futures.append(fut)
            results = await asyncio.gather(*futures, return_exceptions=True)
            for n, ((record, error), result) in enumerate(zip(todo, results, strict=True)):
                if isinstance(result, MessageSizeTooLargeError):  # the topic's limit, from the broker
                    fut = await self._producer.send(
                        self.topic, None, key=record.key, headers=headers_for(record, error, omitted=True)
                    )
                    results[n] = (await asyncio.gather(fut, return_exceptions=True))[0]
            for (record, error), result in zip(todo, results, strict=True):
                if not isinstance(result, BaseException):
                    acknowledged.add((record.partition, record.offset))
                    self.count += 1
                    telemetry.record_dead_letters([error.reason])
            for result in results:
                if isinstance(result, BaseException):
                    raise result
