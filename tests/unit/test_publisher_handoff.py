"""The publisher's two sources: PostgreSQL's outbox (catching up) and the events the
consumer offers after each commit. Every committed event is published once, in order,
whatever the interleaving, and an overflowing queue falls back to the outbox."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from replaywatch.store.postgres import OutboxRow
from replaywatch.stream import publisher as publisher_module
from replaywatch.stream.publisher import OutboxPublisher, _Lane


def row(offset: int, partition: int = 0) -> OutboxRow:
    return OutboxRow(partition, offset, f"id-{offset}", b"k", f"v{offset}".encode(), "within_tolerance")


class FakeStore:
    """The outbox table of one partition."""

    def __init__(self) -> None:
        self.rows: list[OutboxRow] = []
        self.fetches = 0

    async def outbox_fetch(self, partition: int, start: int, limit: int) -> list[OutboxRow]:
        self.fetches += 1
        await asyncio.sleep(0)
        return [r for r in self.rows if r.partition == partition and r.source_offset >= start][:limit]

    async def outbox_delete_before(self, partition: int, offset: int) -> None:
        self.rows = [r for r in self.rows if r.partition != partition or r.source_offset >= offset]


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.progress: list[int] = []

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield
        await asyncio.sleep(0)

    async def send(self, topic: str, value: bytes, **_: Any) -> None:
        self.sent.append(value)

    async def send_offsets_to_transaction(self, offsets: dict[Any, int], group: str) -> None:
        self.progress.extend(offsets.values())


def publisher(store: FakeStore) -> OutboxPublisher:
    p = OutboxPublisher(store=store, admin=None, bootstrap="", input_topic="in", output_topic="out",  # type: ignore[arg-type]
                        group_id="g", progress_group="g.outbox")  # fmt: skip
    p._lanes[0] = _Lane()  # what assign() sets up, without starting the real Kafka task
    return p


async def commit(store: FakeStore, pub: OutboxPublisher, rows: list[OutboxRow]) -> None:
    """What the pipeline does: the rows reach the outbox, then are offered."""
    store.rows += rows
    pub.offer(rows)
    pub.wake({0})
    await asyncio.sleep(0)


async def run_until(producer: FakeProducer, want: int, task: asyncio.Task[None]) -> None:
    async with asyncio.timeout(5):
        while len(producer.sent) < want:
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # anything extra would show up now
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def test_catches_up_from_the_outbox_then_serves_offers_once_each() -> None:
    store, producer = FakeStore(), FakeProducer()
    store.rows = [row(i) for i in range(5)]  # committed before the publisher started
    pub = publisher(store)
    task = asyncio.create_task(pub._drain(0, pub._lanes[0], producer, 2))  # type: ignore[arg-type]  # 0 and 1 already published
    await commit(store, pub, [row(5), row(6)])
    await commit(store, pub, [row(7)])
    await run_until(producer, 6, task)
    assert producer.sent == [f"v{i}".encode() for i in range(2, 8)]
    assert producer.progress == sorted(producer.progress) and producer.progress[-1] == 8


async def test_an_overflowing_queue_falls_back_to_the_outbox(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publisher_module, "QUEUE_LIMIT", 3)
    store, producer = FakeStore(), FakeProducer()
    pub = publisher(store)
    for i in range(0, 10, 2):  # offered faster than published: the queue overflows
        store.rows += [row(i), row(i + 1)]
        pub.offer([row(i), row(i + 1)])
    assert pub._lanes[0].overflow
    task = asyncio.create_task(pub._drain(0, pub._lanes[0], producer, 0))  # type: ignore[arg-type]
    pub.wake({0})
    await commit(store, pub, [row(10)])
    await run_until(producer, 11, task)
    assert producer.sent == [f"v{i}".encode() for i in range(11)]
