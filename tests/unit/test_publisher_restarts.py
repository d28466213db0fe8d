"""The publisher over restarts, pruning and lost progress, on several partitions at
once: Kafka expires the offsets of the progress group (it has no members) after a
week, or an operator deletes the group; a publisher that starts then must take its
position from PostgreSQL, where each lane keeps it when it prunes (now and then, and
whenever it goes idle). Whatever the interleaving, each committed event reaches the
output topic once, in source order per partition."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from unittest.mock import patch

from aiokafka import TopicPartition
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from replaywatch.core.types import OutboxRow
from replaywatch.stream.publisher import OutboxPublisher
from tests.fakes import FakeBatch
from tests.unit.test_publisher_handoff import within_bytes

PARTITIONS = (0, 1, 2)


def row(partition: int, offset: int) -> OutboxRow:
    return OutboxRow(partition, offset, f"id-{partition}-{offset}", b"k", f"v{partition}-{offset}".encode(), "drift")


class Store:
    """The outbox, the committed offsets and the publisher's positions, per partition."""

    def __init__(self) -> None:
        self.rows: list[OutboxRow] = []
        self.committed: dict[int, int] = {}
        self.position: dict[int, int] = {}

    async def load_offsets(self, partitions: set[int]) -> dict[int, int]:
        await asyncio.sleep(0)
        return {p: o for p, o in self.committed.items() if p in partitions}

    async def outbox_fetch(
        self, partition: int, start: int, end: int, limit: int, max_bytes: int = 1 << 24
    ) -> list[OutboxRow]:
        await asyncio.sleep(0)
        rows = sorted((r for r in self.rows if r.partition == partition and start <= r.source_offset < end),
                      key=lambda r: r.source_offset)  # fmt: skip
        return within_bytes(rows[:limit], max_bytes)

    async def outbox_delete_before(self, partition: int, offset: int) -> None:
        await asyncio.sleep(0)
        self.position[partition] = max(self.position.get(partition, 0), offset)
        self.rows = [r for r in self.rows if r.partition != partition or r.source_offset >= offset]

    async def publisher_position(self, partition: int) -> int | None:
        return self.position.get(partition)


class Kafka:
    """The output topic and the progress group's offsets, committed with the events."""

    def __init__(self) -> None:
        self.output: list[bytes | None] = []
        self.progress: dict[int, int] = {}


class Producer:
    def __init__(self, kafka: Kafka) -> None:
        self.kafka = kafka
        self.pending: list[bytes | None] = []
        self.offsets: dict[int, int] = {}

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        self.pending, self.offsets = [], {}
        yield
        await asyncio.sleep(0)  # the commit: events and progress together, or neither
        self.kafka.output += self.pending
        self.kafka.progress.update(self.offsets)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, *, headers: Any = None
    ) -> asyncio.Future[Any]:
        self.pending.append(value)
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> asyncio.Future[Any]:
        self.pending += [value for _, value, _ in batch.records]
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, int], group_id: str) -> None:
        self.offsets.update({tp.partition: o for tp, o in offsets.items()})


Step = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(PARTITIONS), st.integers(0, 3), st.integers(0, 2)),
    st.tuples(st.just("restart"), st.sampled_from(PARTITIONS), st.booleans(), st.integers(0, 3)),
    st.tuples(st.just("expire"), st.sampled_from(PARTITIONS), st.just(0), st.just(0)),
    st.tuples(st.just("run"), st.just(0), st.integers(1, 20), st.just(0)),
)
"""write (partition, events, records without events); restart a lane (after a crash,
or after it had gone idle) some awaits into a publish; the progress group's offsets
expire or are deleted (Kafka expires them only after the group has had no member for
its retention, days: the model lets them go once the lane has gone idle, when it has
stored its position; a crash between a transaction and that, followed by days with no
publisher, is the one window the README names); let the lanes run a while."""


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# found by this test: a write handed over while an idle lane pruned was left pending, and
# a flush then took the lane for drained
@example(steps=[("write", 0, 1, 0), ("restart", 1, False, 2), ("write", 0, 1, 0)], delete_every=3600.0, read_bytes=6)
@example(steps=[("run", 0, 2, 0), ("write", 0, 1, 0), ("restart", 0, False, 2), ("expire", 0, 0, 0)],
         delete_every=0.0, read_bytes=6)  # fmt: skip
@given(
    steps=st.lists(Step, max_size=14),
    delete_every=st.sampled_from([0.0, 3600.0]),
    read_bytes=st.sampled_from([6, 1 << 24]),
)
def test_each_event_is_published_once_through_restarts_and_lost_progress(
    steps: list[tuple[str, int, Any, Any]], delete_every: float, read_bytes: int
) -> None:
    async def scenario() -> tuple[Kafka, Store, dict[int, list[bytes]]]:
        store, kafka = Store(), Kafka()
        committed: dict[int, list[bytes]] = {p: [] for p in PARTITIONS}

        async def progress(partition: int) -> int | None:
            return kafka.progress.get(partition)

        pub = OutboxPublisher(store=store, producers=lambda partition: Producer(kafka), progress=progress,
                              input_topic="in", output_topic="out", dlq_topic="dlq",
                              progress_group="g.outbox")  # fmt: skip

        def start(partition: int) -> None:
            pub.assign({partition})

        async def stop(partition: int) -> None:
            await pub.revoke({partition})

        with (
            patch("replaywatch.stream.publisher.DELETE_EVERY", delete_every),
            patch("replaywatch.stream.publisher.READ_BYTES", read_bytes),
        ):
            for p in PARTITIONS:
                start(p)
            for kind, partition, a, b in steps:
                if kind == "write":
                    begin = store.committed.get(partition)
                    offset = store.committed.get(partition, 0)
                    rows = [row(partition, offset + i) for i in range(a)]
                    store.rows += rows
                    store.committed[partition] = offset + a + b
                    committed[partition] += [r.value for r in rows]
                    pub.offer({partition: (begin, offset + a + b)}, rows)
                elif kind == "restart":
                    if a:  # after it went idle (and pruned)
                        assert await pub.flush(5)
                    for _ in range(b):
                        await asyncio.sleep(0)
                    await stop(partition)
                    start(partition)
                elif kind == "expire":  # after the lane has gone idle (and stored its position)
                    assert await pub.flush(5)
                    kafka.progress.pop(partition, None)
                else:
                    for _ in range(a):
                        await asyncio.sleep(0)
            assert await pub.flush(5), "the publisher did not drain"
            for p in PARTITIONS:
                await stop(p)
        return kafka, store, committed

    kafka, store, committed = asyncio.run(scenario())
    for p in PARTITIONS:
        out = [v for v in kafka.output if v is not None and v.startswith(f"v{p}-".encode())]
        assert out == committed[p], (p, out, committed[p])
    # a drained lane pruned what it published and kept its position in PostgreSQL
    assert store.rows == []
    assert all(store.position.get(p, 0) == kafka.progress.get(p, store.position.get(p, 0)) for p in PARTITIONS)
