"""In-memory fakes of the pipeline's interfaces (``replaywatch.ports``), for unit tests
that drive the writer without services."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

from replaywatch.compare import Diff
from replaywatch.core.types import BatchCommit, StepKey
from replaywatch.exceptions import BadRecordError, Fenced, NotFound, RecordRejected, TransientError
from replaywatch.ports import Source


class FakeCommitStore:
    """Offsets with the fence of ``commit_batch``, and ways to fail."""

    def __init__(self) -> None:
        self.offsets: dict[int, int] = {}
        self.commits: list[BatchCommit] = []
        self.attempts = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.transient_failures = 0
        """The next this many commits fail before they apply (a connection drops)."""
        self.lose_replies = 0
        """The next this many commits apply, then their reply is lost."""
        self.refused_steps: set[StepKey] = set()
        self.down = False

    async def commit_batch(self, batch: BatchCommit) -> set[str]:
        self.attempts += 1
        await self.gate.wait()
        if self.down or self.transient_failures:
            self.transient_failures = max(0, self.transient_failures - 1)
            raise TransientError("connection lost")
        if refused := [k for k in batch.projections if k in self.refused_steps]:
            raise RecordRejected(f"23514 check constraint refuses {refused}")
        for partition, (expected, _) in batch.offsets.items():
            if self.offsets.get(partition) != expected:
                raise Fenced(f"partition {partition} moved on")
        for partition, (_, end) in batch.offsets.items():
            self.offsets[partition] = end
        self.commits.append(batch)
        if self.lose_replies:
            self.lose_replies -= 1
            raise TransientError("connection lost after COMMIT")
        return set()

    async def probe(self, batch: BatchCommit) -> str | None:
        refused = [k for k in batch.projections if k in self.refused_steps]
        return f"23514 refuses {refused}" if refused else None

    async def load_offsets(self, partitions: Iterable[int]) -> dict[int, int]:
        if self.down:
            raise TransientError("connection refused")
        return {p: self.offsets[p] for p in partitions if p in self.offsets}


class FakeDiffStore:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    async def put(self, diff: Diff, run_id: str, step_id: str) -> str:
        self.objects.setdefault(diff.sha256, diff.body)
        return self.uri(diff.sha256)

    async def get(self, sha256: str) -> tuple[bytes, dict[str, Any]]:
        if sha256 not in self.objects:
            raise NotFound(f"no diff object {sha256}")
        return self.objects[sha256], {}

    def uri(self, sha256: str) -> str:
        return f"s3://fake/{sha256}"


class FakeDeadLetters:
    def __init__(self) -> None:
        self.sent: list[Source] = []

    async def send(self, items: Sequence[tuple[Any, BadRecordError]], acknowledged: set[Source]) -> None:
        for record, _ in items:
            source = (record.partition, record.offset)
            if source not in acknowledged:
                self.sent.append(source)
                acknowledged.add(source)
