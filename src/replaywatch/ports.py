"""The small interfaces between the pipeline and its adapters (PostgreSQL, S3, the
dead-letter topic, the publisher). The real adapters live in ``store/`` and
``stream/``; in-memory fakes of the same interfaces live in ``tests/fakes.py``."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from replaywatch.compare import CompareConfig, Diff
from replaywatch.core.projection import StepProjection
from replaywatch.exceptions import BadRecordError
from replaywatch.store.postgres import BatchCommit, OutboxRow, StepKey

Source = tuple[int, int]
"""An input record's (partition, offset)."""


class CommitStore(Protocol):
    """Where a write commits: the fenced statement, and a dry run of it."""

    async def commit_batch(self, batch: BatchCommit) -> None: ...

    async def probe(self, batch: BatchCommit) -> str | None: ...

    async def load_offsets(self, partitions: Iterable[int]) -> dict[int, int]: ...


class ProjectionStore(Protocol):
    async def load_projections(
        self, keys: Sequence[StepKey], config: CompareConfig, broken: dict[StepKey, Exception] | None = None
    ) -> dict[StepKey, StepProjection]: ...


class DiffStore(Protocol):
    async def put(self, diff: Diff, run_id: str, step_id: str) -> str: ...

    async def get(self, sha256: str) -> tuple[bytes, dict[str, Any]]: ...

    def uri(self, sha256: str) -> str: ...


class DeadLetterSink(Protocol):
    async def send(self, items: Sequence[tuple[Any, BadRecordError]], acknowledged: set[Source]) -> None: ...


class EventSink(Protocol):
    """The publisher, as a write sees it: committed events are handed over."""

    def offer(self, offsets: dict[int, tuple[int | None, int]], rows: list[OutboxRow]) -> None: ...
