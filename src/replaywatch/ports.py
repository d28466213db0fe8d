"""The interfaces between the pipeline and its adapters: the input consumer, PostgreSQL,
S3, the dead-letter topic, the outbox publisher and the schema registry. The real
adapters live in ``store/`` and ``stream/``; in-memory fakes of the same interfaces
live in ``tests/fakes.py``, and mypy checks both against these Protocols."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from replaywatch.compare import CompareConfig, Diff
from replaywatch.core.projection import StepProjection
from replaywatch.core.types import Batch, BatchCommit, OutboxRow, Record, Source, StepKey
from replaywatch.envelope.adaptive import Action
from replaywatch.envelope.model import CohortEnvelope
from replaywatch.exceptions import BadRecordError
from replaywatch.rates.tally import Clock

PartitionsChanged = Callable[[set[int]], Awaitable[None]]
"""What the consumer calls when the group revokes or assigns partitions."""


class OffsetAdvice(Protocol):
    """The consumer as a commit sees it: the group hears of the committed offsets."""

    def advise(self, offsets: dict[int, int], *, now: bool = False) -> None: ...


class Consumer(OffsetAdvice, Protocol):
    """The input: the live group member (``stream.consumer``) or a replay's range
    reader (``stream.range_consumer``). It tracks each owned partition's position."""

    positions: dict[int, int | None]

    async def start(self, revoked: PartitionsChanged, assigned: PartitionsChanged) -> None: ...

    async def stop(self) -> None: ...

    def finished(self) -> bool: ...

    def highwater(self, partition: int) -> int | None: ...

    async def poll(self, timeout_ms: int, max_records: int) -> Batch: ...

    def owned(self, batch: Batch) -> Batch: ...

    def advance(self, batch: Batch) -> None: ...

    def seek_to_stored(self, stored: dict[int, int], partitions: set[int]) -> None: ...

    def revoke(self, partitions: set[int]) -> None: ...

    async def flush_advice(self, wait: float) -> None: ...


class CommitStore(Protocol):
    """Where a write commits: the fenced statement, and a dry run of it."""

    async def commit_batch(self, batch: BatchCommit) -> set[str]: ...

    async def probe(self, batch: BatchCommit) -> str | None: ...

    async def load_offsets(self, partitions: Iterable[int]) -> dict[int, int]: ...


class ProjectionStore(Protocol):
    async def load_projections(
        self, keys: Sequence[StepKey], config: CompareConfig, broken: dict[StepKey, Exception] | None = None
    ) -> dict[StepKey, StepProjection]: ...


class EnvelopeStore(Protocol):
    async def load_envelopes(self, partitions: Iterable[int]) -> dict[tuple[int, str], CohortEnvelope]: ...

    async def load_actions(self) -> list[Action]: ...


class RateClockStore(Protocol):
    async def load_rate_clocks(self, partitions: Iterable[int]) -> dict[int, Clock]: ...


class Store(CommitStore, ProjectionStore, EnvelopeStore, RateClockStore, Protocol):
    """PostgreSQL as the pipeline uses it."""

    async def outbox_count(self, partitions: Iterable[int]) -> int: ...

    async def add_rule_counts(self, rows: list[tuple[str, str, int, int]]) -> None: ...

    async def prune(self, table: str, column: str, older_than_seconds: float, limit: int) -> int: ...


class DiffStore(Protocol):
    async def put(self, diff: Diff, run_id: str, step_id: str) -> str: ...

    async def get(self, sha256: str) -> tuple[bytes, dict[str, Any]]: ...

    def uri(self, sha256: str) -> str: ...


class DeadLetterSink(Protocol):
    async def send(self, items: Sequence[tuple[Record, BadRecordError]], acknowledged: set[Source]) -> None: ...


class EventSink(Protocol):
    """The publisher, as a commit sees it: committed events are handed over."""

    def offer(self, offsets: dict[int, tuple[int | None, int]], rows: list[OutboxRow]) -> None: ...

    def reread(self, partitions: Iterable[int]) -> None: ...


class TransactionalProducer(Protocol):
    """Kafka's transactional producer, as a publisher lane uses it (aiokafka's)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def transaction(self) -> AbstractAsyncContextManager[Any]: ...

    async def send(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, *, headers: Any = None
    ) -> asyncio.Future[Any]: ...

    async def send_offsets_to_transaction(self, offsets: dict[Any, int], group_id: str) -> None: ...


class BatchingProducer(TransactionalProducer, Protocol):
    """A transactional producer that also takes a batch per partition at once (aiokafka's
    ``create_batch``/``send_batch``): the publisher builds one batch per output partition
    instead of routing each event through ``send``."""

    def create_batch(self) -> Any: ...

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> asyncio.Future[Any]: ...

    async def partitions_for(self, topic: str) -> set[int]: ...


ProducerFactory = Callable[[int], BatchingProducer]
"""The transactional producer of an input partition's publisher lane."""
ProgressReader = Callable[[int], Awaitable[int | None]]
"""Kafka's admin, as the publisher reads it: a partition's progress, committed in the
transaction of its events (None: none)."""


class Publisher(EventSink, Protocol):
    """The outbox publisher (``stream.publisher``): one lane per owned partition."""

    published: int

    def raise_failure(self) -> None: ...

    def assign(self, partitions: set[int]) -> None: ...

    async def revoke(self, partitions: set[int]) -> None: ...

    async def flush(self, timeout: float) -> bool: ...

    async def close(self) -> None: ...


class SchemaSource(Protocol):
    """The schema registry, as the prepare stage reads it: writer schemas by id."""

    async def writers(self, values: Iterable[bytes | None]) -> Mapping[int, Any]: ...
