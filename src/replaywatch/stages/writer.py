"""The write stage, the commit point: prepared batches are committed to PostgreSQL in
order, with group commit, fences and the ambiguous commit. The steps of the
effectively-once commit are in ``_commit``, numbered.

Writes run one at a time, each after the one before it committed, so that the offsets
a write advances from are the ones the write before it left. While a write commits, the
batches prepared meanwhile gather in the next write and commit in one statement (a
group commit: at low rates a commit costs about the same for 30 records as for 3,000).

Each write ends in a value, which ``settle`` hands back in order:

- ``Committed``: its batches, the offsets it advanced, the events it queued (the
  caller's ``Checkpoint`` moves projections, consumer and publisher on);
- ``Voided``: it did not commit, and neither does any write after it. Its cause:
  ``fenced`` (another consumer moved a partition on), ``refused`` (a service refused
  what some records make, for good: the writer dead-letters those records itself and
  sets them aside, and the rest is read again), or ``stopping`` (the process is
  stopping and a service is down).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from replaywatch import telemetry
from replaywatch.compare import Comparison
from replaywatch.core.batch import BatchResult
from replaywatch.core.types import BatchCommit, OutboxRow, Record, Source, StepKey
from replaywatch.exceptions import BadRecordError, Fenced, GaveUp, RecordRejected, TransientError
from replaywatch.ports import CommitStore, DeadLetterSink, DiffStore
from replaywatch.runtime.retry import Backoff

logger = logging.getLogger(__name__)

GROUP_RECORDS = 5000
"""At most this many records commit in one statement."""


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
    """The comparisons whose diffs go to S3 before the batch commits."""
    started: float
    detected_at_ms: int = 0
    """When its comparisons were made (the events' detected_at)."""


@dataclass(frozen=True)
class Committed:
    """A write that committed."""

    batches: list[PreparedBatch]
    offsets: dict[int, tuple[int | None, int]]
    """partition -> (the offset it advanced from, the next offset)"""
    queued: list[OutboxRow] | None
    """The events it queued for the publisher; None when the commit's reply was lost
    (they are in the outbox: the publisher reads them back)."""
    said: frozenset[str] = frozenset()
    """Ids of its events the history already held: said before, not queued again."""

    @property
    def ends(self) -> dict[int, int]:
        return {p: end for p, (_, end) in self.offsets.items()}


@dataclass(frozen=True)
class Voided:
    """A write that did not commit: it and every write after it are void, and each
    partition resumes from the offset PostgreSQL holds."""

    cause: Literal["fenced", "refused", "stopping"]
    reason: str
    refused: dict[Source, BadRecordError] = field(default_factory=dict)
    """The records a service refused for good (``refused``): dead-lettered already."""


Outcome = Committed | Voided


@dataclass(frozen=True)
class Settled:
    """What ``settle`` saw: the writes that committed, oldest first, and the one that
    voided the rest, if one did."""

    committed: list[Committed]
    voided: Voided | None = None


@dataclass
class WriteGroup:
    """One statement in flight: the batches it commits. Batches join it until it starts."""

    batches: list[PreparedBatch]
    uploads: list[asyncio.Task[dict[str, RecordRejected]]] = field(default_factory=list)
    """Its diffs' uploads, started as each batch joined."""
    task: asyncio.Task[Outcome] | None = None
    started: bool = False

    @property
    def records(self) -> int:
        return sum(b.records for b in self.batches)

    @property
    def size(self) -> int:
        return sum(b.size for b in self.batches)

    def running(self) -> asyncio.Task[Outcome]:
        assert self.task is not None, "a queued group always has its task"
        return self.task


def _retrieve(task: asyncio.Task[Any]) -> None:
    """A void write's uploads may fail unobserved: their errors are not news."""
    if not task.cancelled():
        task.exception()


@dataclass(kw_only=True)
class Writer:
    store: CommitStore
    diffs: DiffStore
    dead_letters: DeadLetterSink
    retry: Backoff
    group_records: int = GROUP_RECORDS
    topic: str = ""
    group: str = ""
    """The input topic and the consumer group (span attributes)."""
    _groups: deque[WriteGroup] = field(default_factory=deque)
    """Writes in flight, oldest first; each waits for the one before it."""
    acknowledged: set[Source] = field(default_factory=set)
    """Dead letters the broker acknowledged whose offsets are not committed yet: a
    retried or re-read write does not send them again."""
    _early: dict[int, list[asyncio.Task[dict[str, RecordRejected]]]] = field(default_factory=dict)
    """Uploads started while their batch (by sequence number) was being prepared."""
    set_aside: dict[Source, BadRecordError] = field(default_factory=dict)
    """Records a service refused for good, dead-lettered by the writer: when they are
    read again the prepare stage passes them by, until a commit passes their offsets."""

    @property
    def records(self) -> int:
        return sum(g.records for g in self._groups)

    @property
    def size(self) -> int:
        return sum(g.size for g in self._groups)

    def head_done(self) -> bool:
        return bool(self._groups) and self._groups[0].running().done()

    def upload(self, seq: int, diffs: list[Comparison]) -> None:
        """Start putting diffs of batch ``seq`` while it is still being prepared: they
        are in S3 sooner, and its write waits for them."""
        task = asyncio.create_task(self.store_diffs(diffs))
        task.add_done_callback(_retrieve)
        self._early.setdefault(seq, []).append(task)

    def enqueue(self, prepared: PreparedBatch) -> None:
        """Queue a prepared batch and start uploading its diffs (unless ``upload`` did):
        it joins the last write if that has not started."""
        last = self._groups[-1] if self._groups else None
        if last is not None and not last.started and last.records < self.group_records:
            group = last
            group.batches.append(prepared)
        else:
            group = WriteGroup([prepared])
            before = last.running() if last is not None else None
            group.task = asyncio.create_task(self._write(group, before), name=f"write-{prepared.seq}")
            self._groups.append(group)
        for seq in [n for n in self._early if n < prepared.seq]:  # batches prepared, then dropped
            del self._early[seq]
        if prepared.seq not in self._early and prepared.diffs:
            self.upload(prepared.seq, prepared.diffs)
        group.uploads += self._early.pop(prepared.seq, [])

    async def settle(self, keep_records: int, keep_bytes: int) -> Settled:
        """Wait until at most ``keep_records`` records and ``keep_bytes`` bytes wait to be
        committed; what the writes that ended say, in order."""
        committed: list[Committed] = []
        while self._groups and (
            self.records > keep_records or self.size > keep_bytes or self._groups[0].running().done()
        ):
            outcome = await self._groups.popleft().running()
            if isinstance(outcome, Voided):
                later = [g.running() for g in self._groups] + [u for g in self._groups for u in g.uploads]
                for task in later:
                    task.cancel()
                await asyncio.gather(*later, return_exceptions=True)
                self._groups.clear()
                return Settled(committed, outcome)
            committed.append(outcome)
        return Settled(committed)

    def committed(self) -> list[Committed]:
        """The writes at the head of the queue that have committed, taken off it, without
        waiting (a voided one is left for ``settle``): their events go out at once."""
        out: list[Committed] = []
        while self._groups and self._groups[0].running().done():
            task = self._groups[0].running()
            result = None if task.cancelled() or task.exception() is not None else task.result()
            if not isinstance(result, Committed):
                break
            out.append(result)
            self._groups.popleft()
        return out

    def forget(self, gone: Callable[[Source], bool]) -> None:
        """Drop what the writer remembers of the records ``gone`` says (committed past, or
        of partitions revoked). In place: the prepare stage reads ``set_aside`` too."""
        self.acknowledged.difference_update([s for s in self.acknowledged if gone(s)])
        for source in [s for s in self.set_aside if gone(s)]:
            del self.set_aside[source]

    async def _write(self, group: WriteGroup, before: asyncio.Task[Outcome] | None) -> Outcome:
        # 1. only after the write before it committed: its offsets are where this one starts
        if before is not None:
            await asyncio.wait([before])
            if before.cancelled() or before.exception() is not None or isinstance(before.result(), Voided):
                return Voided("stopping", "the write before it did not commit")
        group.started = True
        commit = BatchCommit.merged([b.commit for b in group.batches])
        started = time.perf_counter()
        with telemetry.tracer.start_as_current_span(f"write {self.topic}", attributes={
            "messaging.system": "kafka", "messaging.destination.name": self.topic,
            "messaging.consumer.group.name": self.group, "messaging.batch.message_count": group.records,
            "replaywatch.batches": len(group.batches), "replaywatch.events": len(commit.outbox),
        }):  # fmt: skip
            try:
                outcome = await self.retry.call(lambda: self._commit(group, commit),
                                                f"write of batch {group.batches[0].seq}")  # fmt: skip
            except Fenced as exc:
                return Voided("fenced", str(exc))
            except GaveUp as exc:
                return Voided("stopping", str(exc))
        telemetry.STAGE_SECONDS.record(time.perf_counter() - started, {"stage": "write"})
        return outcome

    async def _commit(self, group: WriteGroup, commit: BatchCommit) -> Outcome:
        """One attempt; a TransientError is retried by the policy."""
        # 2. the diffs are in S3 before any event refers to them (a retry puts them
        #    again: an existing sha is not written twice)
        uploads, group.uploads = group.uploads, []
        if not uploads:
            uploads = [asyncio.ensure_future(self.store_diffs([c for b in group.batches for c in b.diffs]))]
        refused_diffs = {sha: why for refused in await asyncio.gather(*uploads) for sha, why in refused.items()}
        if refused_diffs:
            return await self._set_aside(self._records_of_diffs(group, refused_diffs))
        # 3. the dead letters are acknowledged before their offsets commit (once each)
        await self.dead_letters.send([x for b in group.batches for x in b.result.bad], self.acknowledged)
        # 4. one statement: offsets advanced from where this consumer holds them (the
        #    fence), projections, outbox and history, all or nothing
        try:
            said = await self.store.commit_batch(commit)
            queued: list[OutboxRow] | None = commit.queued(said)
        except Fenced:
            # 5. the ambiguous commit: a reply lost after COMMIT trips the fence on the
            #    retry, but then the stored offsets are this write's own end offsets
            stored = await self.store.load_offsets(commit.offsets)
            if any(stored.get(p) != end for p, (_, end) in commit.offsets.items()):
                raise
            logger.warning("the reply of a commit was lost, and the commit had gone through: carrying on")
            said, queued = set(), None
        except RecordRejected as exc:
            refused = await self._refused_steps(group, commit)
            if not refused:  # not reproduced step by step: it may pass
                raise TransientError(f"{exc} (not reproduced step by step)") from exc
            return await self._set_aside(refused)
        # 6. committed: the caller's checkpoint moves the cache, the publisher and the offsets on
        ends = {p: end for p, (_, end) in commit.offsets.items()}
        self.forget(lambda s: s[0] in ends and s[1] < ends[s[0]])
        return Committed(group.batches, commit.offsets, queued, frozenset(said))

    async def store_diffs(self, diffs: list[Comparison]) -> dict[str, RecordRejected]:
        """Put the diffs; those S3 refuses for good are returned, by sha256 (any other
        error is raised)."""

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
        return refused

    async def _set_aside(self, refused: dict[Source, tuple[Record, BadRecordError]]) -> Voided:
        """Dead-letter the records a service refused for good, now, and void the write:
        the rest of its records are read again, these passed by."""
        await self.dead_letters.send(list(refused.values()), self.acknowledged)
        reasons = {source: reason for source, (_, reason) in refused.items()}
        self.set_aside.update(reasons)
        first = next(iter(reasons.values()))
        return Voided("refused", f"{len(reasons)} records refused for good ({first}); dead-lettered", reasons)

    @staticmethod
    def _records_of_diffs(
        group: WriteGroup, refused: dict[str, RecordRejected]
    ) -> dict[Source, tuple[Record, BadRecordError]]:
        return {
            (record.partition, record.offset): (record, refused[c.diff.sha256])
            for b in group.batches
            for record, _, c in b.result.emitted
            if c.diff is not None and c.diff.sha256 in refused
        }

    async def _refused_steps(
        self, group: WriteGroup, commit: BatchCommit
    ) -> dict[Source, tuple[Record, BadRecordError]]:
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
            (r.partition, r.offset): (r, RecordRejected(
                f"PostgreSQL refused the rows of step {k[1]!r} of run {k[0]!r}: {reason}"
            ))
            for k, reason in reasons.items()
            for b in group.batches
            for r in b.result.sources.get(k, [])
        }  # fmt: skip
