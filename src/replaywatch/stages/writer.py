"""Ordered writes: each prepared batch is committed to PostgreSQL, in order, with group
commit, fences, rewinds and the ambiguous commit. The steps of the effectively-once
commit are in ``_commit``, numbered.

Writes run one at a time, each after the one before it committed, so that the offsets
a write advances from are the ones the write before it left. While a write commits, the
batches prepared meanwhile gather in the next write and commit in one statement (a
group commit: at low rates a commit costs about the same for 30 records as for 3,000).

A write ends in one of four ways:

- committed: ``on_commit`` is called (the cache, the publisher and the offsets move on);
- ``Fenced``: another consumer moved a partition on;
- ``Rewind``: a service refused what some records make, for good (those records are
  dead-lettered when read again; everything from this write on is re-read);
- ``GaveUp``: the process is stopping and a service is down.

In the last three cases every write after it is void (``PredecessorNotCommitted``), and
``settle`` reports the failure so that the pipeline resumes from PostgreSQL.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from replaywatch import telemetry
from replaywatch.compare import Comparison
from replaywatch.core.batch import BatchResult
from replaywatch.exceptions import BadRecordError, Fenced, RecordRejected, TransientError
from replaywatch.ports import CommitStore, DeadLetterSink, DiffStore, Source
from replaywatch.runtime.retry import Backoff, GaveUp
from replaywatch.store.postgres import BatchCommit, StepKey

logger = logging.getLogger(__name__)

GROUP_RECORDS = 5000
"""At most this many records commit in one statement."""


class PredecessorNotCommitted(Exception):
    """A write was not attempted because the write before it did not commit."""


class Rewind(Exception):
    """A service refused what some records make, for good."""

    def __init__(self, refused: dict[Source, BadRecordError]) -> None:
        super().__init__(f"{len(refused)} records refused for good")
        self.refused = refused


class _DiffsRefused(Exception):
    def __init__(self, refused: dict[str, RecordRejected]) -> None:
        super().__init__(f"S3 refused {len(refused)} diffs")
        self.refused = refused


WriteFailure = Fenced | Rewind | GaveUp


@dataclass
class PreparedBatch:
    """A batch prepared and not yet written."""

    seq: int
    records: int
    size: int
    """Bytes of the input values."""
    result: BatchResult
    commit: BatchCommit
    diffs: list[Comparison]
    uploads: list[asyncio.Task[None]]
    """The diffs' uploads, started while the batch was prepared."""
    started: float
    detected_at_ms: int = 0
    """When its comparisons were made (the events' detected_at)."""


@dataclass
class WriteGroup:
    """One statement in flight: the batches it commits. Batches join it until it starts."""

    batches: list[PreparedBatch]
    task: asyncio.Task[None] | None = None
    started: bool = False

    @property
    def records(self) -> int:
        return sum(b.records for b in self.batches)

    @property
    def size(self) -> int:
        return sum(b.size for b in self.batches)

    def running(self) -> asyncio.Task[None]:
        assert self.task is not None, "a queued group always has its task"
        return self.task


@dataclass(kw_only=True)
class Writer:
    store: CommitStore
    diffs: DiffStore
    dead_letters: DeadLetterSink
    retry: Backoff
    on_commit: Callable[[list[PreparedBatch], BatchCommit], None]
    group_records: int = GROUP_RECORDS
    topic: str = ""
    group: str = ""
    """The input topic and the consumer group (span attributes)."""
    _groups: deque[WriteGroup] = field(default_factory=deque)
    """Writes in flight, oldest first; each waits for the one before it."""
    acknowledged: set[Source] = field(default_factory=set)
    """Dead letters the broker acknowledged whose offsets are not committed yet: a
    retried or re-read write does not send them again."""

    @property
    def records(self) -> int:
        return sum(g.records for g in self._groups)

    @property
    def size(self) -> int:
        return sum(g.size for g in self._groups)

    def head_done(self) -> bool:
        return bool(self._groups) and self._groups[0].running().done()

    def enqueue(self, prepared: PreparedBatch) -> None:
        """Queue a prepared batch: it joins the last write if that has not started."""
        last = self._groups[-1] if self._groups else None
        if last is not None and not last.started and last.records < self.group_records:
            last.batches.append(prepared)
            return
        group = WriteGroup([prepared])
        before = last.running() if last is not None else None
        group.task = asyncio.create_task(self._write(group, before), name=f"write-{prepared.seq}")
        self._groups.append(group)

    async def settle(self, keep_records: int, keep_bytes: int) -> WriteFailure | None:
        """Wait until at most ``keep_records`` records and ``keep_bytes`` bytes wait to be
        committed. Returns the failure that voided the writes in flight, if one did."""
        while self._groups and (
            self.records > keep_records or self.size > keep_bytes or self._groups[0].running().done()
        ):
            try:
                await self._groups[0].running()
            except (Fenced, Rewind, GaveUp) as exc:  # the oldest write has no predecessor to void it
                tasks = [g.running() for g in self._groups]
                for later in tasks:
                    later.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                self._groups.clear()
                return exc
            self._groups.popleft()
        return None

    def forget(self, gone: Callable[[Source], bool]) -> None:
        self.acknowledged = {s for s in self.acknowledged if not gone(s)}

    async def _write(self, group: WriteGroup, before: asyncio.Task[None] | None) -> None:
        # 1. only after the write before it committed: its offsets are where this one starts
        if before is not None:
            await asyncio.wait([before])
            if before.cancelled() or before.exception() is not None:
                raise PredecessorNotCommitted()
        group.started = True
        commit = BatchCommit.merged([b.commit for b in group.batches])
        started = time.perf_counter()
        with telemetry.tracer.start_as_current_span(f"write {self.topic}", attributes={
            "messaging.system": "kafka", "messaging.destination.name": self.topic,
            "messaging.consumer.group.name": self.group, "messaging.batch.message_count": group.records,
            "replaywatch.batches": len(group.batches), "replaywatch.events": len(commit.outbox),
        }):  # fmt: skip
            await self.retry.call(lambda: self._commit(group, commit), f"write of batch {group.batches[0].seq}")
        telemetry.STAGE_SECONDS.record(time.perf_counter() - started, {"stage": "write"})
        self.on_commit(group.batches, commit)

    async def _commit(self, group: WriteGroup, commit: BatchCommit) -> None:
        """One attempt; a TransientError is retried by the policy."""
        try:
            # 2. the diffs are in S3 before any event refers to them
            uploads = [t for b in group.batches for t in b.uploads]
            for b in group.batches:
                b.uploads = []
            if uploads:
                await asyncio.gather(*uploads)
            else:  # a retry: put them again (an existing sha is not written twice)
                await self.store_diffs([c for b in group.batches for c in b.diffs])
            # 3. the dead letters are acknowledged before their offsets commit (once each)
            bad = [x for b in group.batches for x in b.result.bad]
            await self.dead_letters.send(bad, self.acknowledged)
            # 4. one statement: offsets advanced from where this consumer holds them (the
            #    fence), projections, outbox and history, all or nothing
            await self.store.commit_batch(commit)
        except Fenced:
            # 5. the ambiguous commit: a reply lost after COMMIT trips the fence on the
            #    retry, but then the stored offsets are this write's own end offsets
            stored = await self.store.load_offsets(commit.offsets)
            if any(stored.get(p) != end for p, (_, end) in commit.offsets.items()):
                raise
            logger.warning("the reply of a commit was lost, and the commit had gone through: carrying on")
        except _DiffsRefused as exc:
            raise Rewind(self._records_of_diffs(group, exc.refused)) from None
        except RecordRejected as exc:
            refused = await self._refused_steps(group, commit)
            if not refused:  # not reproduced step by step: it may pass
                raise TransientError(f"{exc} (not reproduced step by step)") from exc
            raise Rewind(refused) from None
        # 6. committed: the caller moves the cache, the publisher and the offsets on
        ends = {p: end for p, (_, end) in commit.offsets.items()}
        self.forget(lambda s: s[0] in ends and s[1] < ends[s[0]])

    async def store_diffs(self, diffs: list[Comparison]) -> None:
        """Put the diffs; those S3 refuses for good are raised together."""

        async def put(c: Comparison) -> None:
            assert c.diff is not None
            await self.diffs.put(c.diff, c.run_id, c.step_id)

        results = await asyncio.gather(*(put(c) for c in diffs), return_exceptions=True)
        refused: dict[str, RecordRejected] = {}
        for c, result in zip(diffs, results, strict=True):
            if isinstance(result, RecordRejected) and c.diff is not None:
                refused[c.diff.sha256] = result
            elif isinstance(result, BaseException):
                raise result
        if refused:
            raise _DiffsRefused(refused)

    @staticmethod
    def _records_of_diffs(group: WriteGroup, refused: dict[str, RecordRejected]) -> dict[Source, BadRecordError]:
        return {
            (record.partition, record.offset): refused[c.diff.sha256]
            for b in group.batches
            for record, _, c in b.result.emitted
            if c.diff is not None and c.diff.sha256 in refused
        }

    async def _refused_steps(self, group: WriteGroup, commit: BatchCommit) -> dict[Source, BadRecordError]:
        """PostgreSQL refused the statement's rows: find the steps whose rows it refuses
        (halving the set of steps, each half tried in a transaction that is rolled back)
        and name their records."""
        reasons: dict[StepKey, str] = {}

        async def search(keys: list[StepKey]) -> None:
            reason = await self.store.probe(commit.only(set(keys)))
            if reason is None:
                return
            if len(keys) == 1:
                reasons[keys[0]] = reason
                return
            await search(keys[: len(keys) // 2])
            await search(keys[len(keys) // 2 :])

        await search(list(commit.projections))
        return {
            (r.partition, r.offset): RecordRejected(
                f"PostgreSQL refused the rows of step {k[1]!r} of run {k[0]!r}: {reason}"
            )
            for k, reason in reasons.items()
            for b in group.batches
            for r in b.result.sources.get(k, [])
        }
