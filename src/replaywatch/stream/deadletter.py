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
from replaywatch.core.types import Record
from replaywatch.exceptions import BadRecordError, ServiceRefused
from replaywatch.stream.kafka_errors import translate_kafka_errors

logger = logging.getLogger(__name__)

MAX_MESSAGE_LEN = 1000
TRIMMED_KEY_BYTES = 1024
"""The key a dead letter keeps when its key and headers alone are over the topic's limit."""


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


def headers_for(record: Record, error: BadRecordError, *, omitted: bool = False) -> list[tuple[str, bytes]]:
    """A bad input record's dead-letter headers, followed by its own headers."""
    headers = dead_letter_headers(
        error, (record.topic, record.partition, record.offset),
        omitted="too large for the dead-letter topic" if omitted else None,
    )  # fmt: skip
    return headers + [(k, v) for k, v in (record.headers or ()) if not k.startswith("replaywatch.")]


RECORD_OVERHEAD = 512
"""Bytes a dead letter takes beyond its key, value and headers (the record batch's
header and the record's varints, with room to spare)."""

Letter = tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]
"""(value, key, headers) of one dead letter as it is sent."""


def letter_size(letter: Letter) -> int:
    """What a dead letter takes on the topic, at most (uncompressed)."""
    value, key, headers = letter
    return len(value or b"") + len(key or b"") + sum(len(k) + len(v or b"") + 10 for k, v in headers) + RECORD_OVERHEAD


def letters(record: Record, error: BadRecordError) -> list[Letter]:
    """A bad record's dead letter as it is, then smaller: without its value; then also
    with its key cut to ``TRIMMED_KEY_BYTES`` and its own headers left out (saying so)."""
    key = record.key
    cut = None if key is None else key[:TRIMMED_KEY_BYTES]
    dropped = len(record.headers or ())
    trimmed = [
        *dead_letter_headers(error, (record.topic, record.partition, record.offset)),
        ("replaywatch.value_omitted", (
            f"too large for the dead-letter topic: value left out, key cut to {len(cut or b'')} of "
            f"{len(key or b'')} bytes, {dropped} record headers left out"
        ).encode()),
    ]  # fmt: skip
    return [
        (record.value, key, headers_for(record, error)),
        (None, key, headers_for(record, error, omitted=True)),
        (None, cut, trimmed),
    ]


class DeadLetters:
    def __init__(self, producer: AIOKafkaProducer, topic: str, limit: int = 1024 * 1024) -> None:
        self._producer = producer
        self.topic = topic
        self.limit = limit
        """The topic's max.message.bytes: a dead letter larger is sent smaller (``letters``)."""
        self.count = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, client: dict[str, Any], topic: str, max_request_size: int, limit: int
    ) -> AsyncIterator[DeadLetters]:
        """An idempotent producer for the dead-letter topic, stopped on exit. ``limit``:
        the topic's max.message.bytes."""
        producer = AIOKafkaProducer(**client, enable_idempotence=True, acks="all", max_request_size=max_request_size)
        async with translate_kafka_errors("start dead-letter producer"):
            await producer.start()
        try:
            yield cls(producer, topic, limit)
        finally:
            await asyncio.shield(producer.stop())

    def _fitting(self, record: Record, error: BadRecordError) -> list[Letter]:
        """The forms of a record's dead letter to try in turn: the first that fits the
        topic's limit, then the smaller ones. A record the broker would refuse is never
        sent: with an idempotent producer a refused batch leaves a gap in the sequence
        that fails every later send (OutOfOrderSequenceNumber)."""
        forms = letters(record, error)
        for n, letter in enumerate(forms[:-1]):
            if letter_size(letter) <= self.limit:
                return forms[n:]
        if letter_size(forms[-1]) > self.limit:
            raise ServiceRefused(
                f"the dead-letter topic {self.topic} takes at most {self.limit} bytes a record, less than a dead "
                "letter's headers alone: raise its max.message.bytes above a few kilobytes"
            )
        return forms[-1:]

    async def _send_smaller(self, forms: list[Letter]) -> Any:
        """A dead letter the producer or the broker refused as too large: the smaller
        forms in turn. What the broker answers; never a retry of the same size."""
        result: Any = None
        for value, key, headers in forms:
            try:
                fut = await self._producer.send(self.topic, value, key=key, headers=headers)
                result = (await asyncio.gather(fut, return_exceptions=True))[0]
            except MessageSizeTooLargeError as exc:
                result = exc
            if not isinstance(result, MessageSizeTooLargeError):
                return result
        return result

    async def send(self, items: Sequence[tuple[Record, BadRecordError]], acknowledged: set[tuple[int, int]]) -> None:
        """Send every bad record not in ``acknowledged`` (partition, offset) and wait
        until the broker has them. Each one the broker acknowledged is added there, so a
        retried write does not send it again."""
        todo = [(r, e) for r, e in items if (r.partition, r.offset) not in acknowledged]
        if not todo:
            return
        async with translate_kafka_errors("dead-letter"):
            futures = []
            forms = [self._fitting(record, error) for record, error in todo]
            for (record, error), (first, *_) in zip(todo, forms, strict=True):
                logger.warning(
                    "dead-lettered %s[%d]@%d: %s (%s)",
                    record.topic,
                    record.partition,
                    record.offset,
                    error.reason,
                    str(error)[:200],
                    extra={"partition": record.partition, "offset": record.offset, "reason": error.reason},
                )
                value, key, headers = first
                try:
                    fut = await self._producer.send(self.topic, value, key=key, headers=headers)
                except MessageSizeTooLargeError as exc:
                    fut = asyncio.get_running_loop().create_future()
                    fut.set_exception(exc)
                futures.append(fut)
            results = await asyncio.gather(*futures, return_exceptions=True)
            for n, (result, tries) in enumerate(zip(results, forms, strict=True)):
                if isinstance(result, MessageSizeTooLargeError):  # over the producer's or the topic's limit
                    results[n] = await self._send_smaller(tries[1:])
            for (record, error), result in zip(todo, results, strict=True):
                if not isinstance(result, BaseException):
                    acknowledged.add((record.partition, record.offset))
                    self.count += 1
                    telemetry.record_dead_letters([error.reason])
            for result in results:
                if isinstance(result, BaseException):
                    raise result
