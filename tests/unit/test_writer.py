"""The writer with fakes of its interfaces, no services: writes commit in order, batches
prepared meanwhile commit together, a fence voids what follows, a commit whose reply
was lost is recognised, dead letters go once, refused steps rewind, and a stopping
process gives up on a dead store."""

from __future__ import annotations

import asyncio

import pytest

from replaywatch.core import types as core
from replaywatch.core.batch import BatchResult
from replaywatch.core.projection import StepProjection
from replaywatch.core.types import BatchCommit
from replaywatch.exceptions import InvalidJsonError
from replaywatch.runtime.retry import Backoff
from replaywatch.stages.writer import PreparedBatch, Voided, Writer
from tests.fakes import FakeCommitStore, FakeDeadLetters, FakeDiffStore


class Record:
    def __init__(self, partition: int, offset: int) -> None:
        self.topic, self.partition, self.offset, self.value, self.key, self.headers = (
            "in",
            partition,
            offset,
            b"",
            None,
            (),
        )
        self.timestamp = 0


def batch(seq: int, start: int | None, end: int, *, step: str = "s", bad: int = 0, partition: int = 0) -> PreparedBatch:
    """Records ``[start or 0, end)`` of a partition; the first ``bad`` of them are bad."""
    first = start or 0
    records: list[core.Record] = [Record(partition, o) for o in range(first, end)]
    key = ("r", step)
    result = BatchResult(
        projections={key: (partition, StepProjection("r", step, max_attempt=end))},
        bad=[(r, InvalidJsonError("bad")) for r in records[:bad]],
        sources={key: records[bad:]},
    )
    commit = BatchCommit(offsets={partition: (start, end)}, projections={key: result.projections[key][1]})
    return PreparedBatch(seq, len(records), end - first, result, commit, [], 0.0)


class Harness:
    def __init__(self) -> None:
        self.store = FakeCommitStore()
        self.dead = FakeDeadLetters()
        self.stop = asyncio.Event()
        self.committed: list[list[int]] = []
        self.writer = Writer(
            store=self.store, diffs=FakeDiffStore(), dead_letters=self.dead,
            retry=Backoff(self.stop, first=0.001, most=0.01, grace=0.05),
        )  # fmt: skip

    async def settle(self) -> Voided | None:
        """Settle every write; the batches of each one that committed, in order, go to
        ``committed``; the write that voided the rest, if one did, is returned."""
        async with asyncio.timeout(5):
            settled = await self.writer.settle(0, 0)
        self.committed += [[b.seq for b in c.batches] for c in settled.committed]
        return settled.voided


async def test_writes_commit_in_order_and_batches_prepared_meanwhile_commit_together() -> None:
    h = Harness()
    h.store.gate.clear()  # the first write is committing
    h.writer.enqueue(batch(1, None, 10))
    await asyncio.sleep(0)
    h.writer.enqueue(batch(2, 10, 20))
    h.writer.enqueue(batch(3, 20, 30))
    h.store.gate.set()
    assert await h.settle() is None
    assert h.committed == [[1], [2, 3]]  # two statements for three batches
    assert [c.offsets for c in h.store.commits] == [{0: (None, 10)}, {0: (10, 30)}]
    assert h.store.offsets == {0: 30}


async def test_a_fence_voids_every_write_after_it() -> None:
    h = Harness()
    h.store.offsets = {0: 99}  # another consumer moved the partition on
    h.store.gate.clear()
    h.writer.enqueue(batch(1, 50, 60))
    await asyncio.sleep(0)
    h.writer.enqueue(batch(2, 60, 70))
    h.store.gate.set()
    failure = await h.settle()
    assert failure is not None and failure.cause == "fenced"
    assert h.committed == [] and h.store.commits == []
    assert h.store.attempts == 1, "the write after the fenced one was not attempted (void)"
    assert h.writer.records == 0


async def test_a_commit_whose_reply_was_lost_is_recognised_once() -> None:
    h = Harness()
    h.store.lose_replies = 1
    h.writer.enqueue(batch(1, None, 10))
    assert await h.settle() is None
    assert h.committed == [[1]] and len(h.store.commits) == 1
    assert h.store.attempts == 2  # the retry tripped the fence and found its own offsets


async def test_dead_letters_go_once_however_often_the_write_is_retried() -> None:
    h = Harness()
    h.store.transient_failures = 3
    h.writer.enqueue(batch(1, None, 10, bad=4))
    assert await h.settle() is None
    assert h.store.attempts == 4
    assert sorted(h.dead.sent) == [(0, 0), (0, 1), (0, 2), (0, 3)]
    assert h.writer.acknowledged == set(), "committed dead letters are forgotten"


async def test_refused_steps_rewind_with_their_records_named() -> None:
    h = Harness()
    h.store.refused_steps = {("r", "bad")}
    first = batch(1, None, 5, step="ok")
    second = batch(2, None, 3, step="bad", partition=1)
    h.store.gate.clear()
    h.writer.enqueue(first)
    h.writer.enqueue(second)  # joins the first: one statement for both
    h.store.gate.set()
    failure = await h.settle()
    assert failure is not None and failure.cause == "refused"
    assert sorted(failure.refused) == [(1, 0), (1, 1), (1, 2)]
    assert "refuses" in str(next(iter(failure.refused.values())))
    assert h.committed == []
    # dead-lettered by the writer itself, once, and set aside for when they are read again
    assert sorted(h.dead.sent) == [(1, 0), (1, 1), (1, 2)]
    assert sorted(h.writer.set_aside) == [(1, 0), (1, 1), (1, 2)]


@pytest.mark.parametrize("stopping", [True, False])
async def test_a_dead_store_is_given_up_only_when_stopping(stopping: bool) -> None:
    h = Harness()
    h.store.down = True
    h.writer.enqueue(batch(1, None, 10))
    if stopping:
        h.stop.set()
        failure = await h.settle()
        assert failure is not None and failure.cause == "stopping"
    else:
        settling = asyncio.create_task(h.writer.settle(0, 0))
        done, _ = await asyncio.wait([settling], timeout=0.3)
        assert not done, "a running process retries a dead store for as long as it takes"
        h.store.down = False
        async with asyncio.timeout(5):
            settled = await settling
        assert settled.voided is None and [[b.seq for b in c.batches] for c in settled.committed] == [[1]]
