"""In-memory fakes of the pipeline's interfaces (``replaywatch.ports``), for unit tests
that drive the writer and the pipeline without services. mypy checks each against its
Protocol (the block at the end)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from replaywatch import ports
from replaywatch.compare import CompareConfig, Diff
from replaywatch.core.projection import StepProjection
from replaywatch.core.types import Batch, BatchCommit, OutboxRow, Partition, Record, Source, StepKey
from replaywatch.envelope.adaptive import Action
from replaywatch.envelope.model import CohortEnvelope
from replaywatch.exceptions import BadRecordError, Fenced, NotFound, RecordRejected, TransientError
from replaywatch.ports import PartitionsChanged
from replaywatch.rates.tally import Clock, RateKey


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


class FakeStore(FakeCommitStore):
    """PostgreSQL as the pipeline uses it: what commits is kept, projections included."""

    def __init__(self) -> None:
        super().__init__()
        self.projections: dict[StepKey, StepProjection] = {}
        self.envelopes: dict[tuple[int, str], CohortEnvelope] = {}
        self.actions: list[Action] = []
        self.rule_counts: list[tuple[str, str, int, int]] = []
        self.clocks: dict[int, Clock] = {}
        self.windows: dict[RateKey, list[int]] = {}

    async def commit_batch(self, batch: BatchCommit) -> set[str]:
        said = await super().commit_batch(batch)
        self.projections.update(batch.projections)
        self.envelopes.update((k, CohortEnvelope.from_json(text)) for k, text in batch.envelopes.items())
        self.clocks.update((p, Clock.from_json(orjson.loads(text))) for p, text in batch.clocks.items())
        for key, counts in batch.windows.items():
            self.windows[key] = [a + b for a, b in zip(self.windows.get(key, [0] * len(counts)), counts, strict=True)]
        return said

    async def load_rate_clocks(self, partitions: Iterable[int]) -> dict[int, Clock]:
        if self.down:
            raise TransientError("connection refused")
        return {p: Clock.from_json(c.to_json()) for p, c in self.clocks.items() if p in set(partitions)}

    async def load_actions(self) -> list[Action]:
        if self.down:
            raise TransientError("connection refused")
        return list(self.actions)

    async def load_envelopes(self, partitions: Iterable[int]) -> dict[tuple[int, str], CohortEnvelope]:
        if self.down:
            raise TransientError("connection refused")
        return {k: e.copy() for k, e in self.envelopes.items() if k[0] in set(partitions)}

    async def load_projections(
        self, keys: Sequence[StepKey], config: CompareConfig, broken: dict[StepKey, Exception] | None = None
    ) -> dict[StepKey, StepProjection]:
        if self.down:
            raise TransientError("connection refused")
        return {k: self.projections[k] for k in keys if k in self.projections}

    async def outbox_count(self, partitions: Iterable[int]) -> int:
        return 0

    async def add_rule_counts(self, rows: list[tuple[str, str, int, int]]) -> None:
        self.rule_counts += rows

    async def prune(self, table: str, column: str, older_than_seconds: float, limit: int) -> int:
        return 0


@dataclass(frozen=True)
class FakePartition:
    topic: str
    partition: int


@dataclass(frozen=True)
class FakeRecord:
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    headers: Sequence[tuple[str, bytes]] = ()
    topic: str = "in"
    timestamp: int = 0


class FakeConsumer:
    """A group of one over partitions held in memory: ``start`` assigns them all, each
    poll hands out what follows the position it read to. With ``to_end`` it reads like a
    replay: finished once every partition is read to its end."""

    def __init__(self, log: dict[int, list[FakeRecord]], *, to_end: bool = True) -> None:
        self.log, self.to_end = log, to_end
        self.positions: dict[int, int | None] = {}
        self.fetched: dict[int, int] = {}
        self.advised: dict[int, int] = {}
        self.seeks: list[dict[int, int]] = []
        self._callbacks: tuple[PartitionsChanged, PartitionsChanged] | None = None

    async def start(self, revoked: PartitionsChanged, assigned: PartitionsChanged) -> None:
        self._callbacks = (revoked, assigned)
        await assigned(set(self.log))

    async def rebalance(self, revoked: set[int]) -> None:
        """The group takes ``revoked`` away (their records go with them), then assigns
        what is left, as an eager rebalance does."""
        assert self._callbacks is not None, "started"
        await self._callbacks[0](revoked)
        for p in revoked:
            del self.log[p]
        await self._callbacks[1](set(self.log))

    async def stop(self) -> None:
        return None

    def finished(self) -> bool:
        return self.to_end and all(self.positions.get(p) == len(recs) for p, recs in self.log.items())

    def highwater(self, partition: int) -> int | None:
        return len(self.log[partition])

    async def poll(self, timeout_ms: int, max_records: int) -> Batch:
        out: dict[Partition, Sequence[Record]] = {}
        for p, start in self.fetched.items():
            chunk = self.log[p][start : start + max_records]
            if chunk:
                out[FakePartition("in", p)] = chunk
                self.fetched[p] = start + len(chunk)
        if not out:
            await asyncio.sleep(timeout_ms / 1000)
        return out

    def owned(self, batch: Batch) -> Batch:
        out: dict[Partition, Sequence[Record]] = {}
        for tp, recs in batch.items():
            if tp.partition not in self.positions:
                continue
            start = self.positions[tp.partition] or 0
            if kept := [r for r in recs if r.offset >= start]:
                out[tp] = kept
        return out

    def advance(self, batch: Batch) -> None:
        for tp, recs in batch.items():
            self.positions[tp.partition] = recs[-1].offset + 1

    def seek_to_stored(self, stored: dict[int, int], partitions: set[int]) -> None:
        self.seeks.append({p: stored.get(p, 0) for p in partitions})
        for p in partitions:
            self.positions[p] = stored.get(p)
            self.fetched[p] = stored.get(p, 0)

    def revoke(self, partitions: set[int]) -> None:
        for p in partitions:
            self.positions.pop(p, None)
            self.fetched.pop(p, None)

    def advise(self, offsets: dict[int, int], *, now: bool = False) -> None:
        self.advised.update(offsets)

    async def flush_advice(self, wait: float) -> None:
        return None


class FakePublisher:
    """The outbox publisher: what is offered is published at once."""

    def __init__(self) -> None:
        self.events: list[OutboxRow] = []
        self.reread_partitions: list[int] = []
        self.owned: set[int] = set()
        self.published = 0

    def offer(self, offsets: dict[int, tuple[int | None, int]], rows: list[OutboxRow]) -> None:
        self.events += rows
        self.published += len(rows)

    def reread(self, partitions: Iterable[int]) -> None:
        self.reread_partitions += list(partitions)

    def raise_failure(self) -> None:
        return None

    def assign(self, partitions: set[int]) -> None:
        self.owned |= partitions

    async def revoke(self, partitions: set[int]) -> None:
        self.owned -= partitions

    async def flush(self, timeout: float) -> bool:
        return True

    async def close(self) -> None:
        return None


class FakeSchemas:
    """A registry that knows no writer schema: plain Avro only."""

    async def writers(self, values: Iterable[bytes | None]) -> Mapping[int, Any]:
        return {}


if TYPE_CHECKING:  # each fake is checked against the port it stands for
    _ports: tuple[ports.Store, ports.DiffStore, ports.DeadLetterSink, ports.Consumer, ports.Publisher,
                  ports.SchemaSource] = (FakeStore(), FakeDiffStore(), FakeDeadLetters(), FakeConsumer({}),
                                         FakePublisher(), FakeSchemas())  # fmt: skip


class FakeBatch:
    """aiokafka's ``BatchBuilder`` as the publisher fills it: full past ``capacity``
    records (a first record always fits)."""

    def __init__(self, capacity: int = 1_000_000) -> None:
        self.capacity = capacity
        self.records: list[tuple[bytes | None, bytes | None, Any]] = []

    def append(self, *, key: bytes | None, value: bytes | None, timestamp: float | None, headers: Any) -> object:
        if self.records and len(self.records) >= self.capacity:
            return None
        self.records.append((key, value, headers))
        return object()
