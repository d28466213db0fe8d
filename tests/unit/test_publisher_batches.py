"""The publisher sends a transaction's events as one batch per output partition: each
event reaches the partition Kafka's default partitioner gives its key (as ``send``
would), each partition's events keep their input order, and a full batch goes out
before the next starts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given, settings
from hypothesis import strategies as st

from replaywatch.core.types import OutboxRow
from replaywatch.stream.partitioning import KeyPartitions
from replaywatch.stream.publisher import OutboxPublisher
from tests.fakes import FakeBatch
from tests.unit.test_publisher_handoff import FakeStore, commit


class BatchingKafka:
    """A transactional producer that records each batch: its partition and its records."""

    def __init__(self, partitions: set[int], capacity: int) -> None:
        self.partitions = partitions
        self.capacity = capacity
        self.batches: list[tuple[int, list[tuple[bytes | None, bytes | None, Any]]]] = []
        self.progress: list[int] = []

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, *, headers: Any = None
    ) -> asyncio.Future[Any]:
        raise AssertionError("every event fits: none goes through send")

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.capacity)

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> asyncio.Future[Any]:
        assert topic == "out" and batch.records
        self.batches.append((partition, list(batch.records)))
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def partitions_for(self, topic: str) -> set[int]:
        return self.partitions

    async def send_offsets_to_transaction(self, offsets: dict[Any, int], group_id: str) -> None:
        self.progress.extend(offsets.values())


@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(st.sampled_from([b"run-1", b"run-2", b"run-3", b"a-much-longer-run-key-7", b"k"]), min_size=1,
                  max_size=40),
    partitions=st.integers(1, 6),
    capacity=st.integers(1, 8),
)  # fmt: skip
def test_one_batch_per_partition_in_input_order(keys: list[bytes], partitions: int, capacity: int) -> None:
    rows = [OutboxRow(0, i, f"id-{i}", key, b"v%d" % i, "drift") for i, key in enumerate(keys)]
    kafka = BatchingKafka(set(range(partitions)), capacity)

    async def scenario() -> None:
        store = FakeStore()
        pub = OutboxPublisher(store=store, producers=lambda p: kafka, progress=lambda p: _none(),
                              input_topic="in", output_topic="out", dlq_topic="dlq", progress_group="g")  # fmt: skip
        pub.assign({0})
        await commit(store, pub, rows, len(rows))
        async with asyncio.timeout(10):
            while not kafka.progress or kafka.progress[-1] < len(rows):
                await asyncio.sleep(0.001)
        await pub.revoke({0})

    asyncio.run(scenario())
    every = sorted(range(partitions))
    expect = {p: [r.value for r in rows if DefaultPartitioner()(r.key, every, every) == p] for p in every}
    got: dict[int, list[bytes | None]] = {p: [] for p in every}
    for p, records in kafka.batches:
        assert len(records) <= capacity
        got[p] += [value for _, value, _ in records]
    assert got == expect


async def _none() -> int | None:
    return None


def test_a_keys_partition_is_the_default_partitioners_and_kept() -> None:
    parts = KeyPartitions([0, 1, 2, 3, 4, 5, 6, 7])
    for key in (b"run-1", b"run-2", "café".encode(), b""):
        assert parts.of(key) == DefaultPartitioner()(key, parts.partitions, parts.partitions)
    assert parts.of(b"run-1") == parts.of(b"run-1") and len(parts._by_key) == 4
    assert parts.of(None) in parts.partitions
