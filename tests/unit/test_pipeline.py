"""The pipeline with fakes of every adapter, no services, each test in milliseconds: a
range is compared, committed and published once; a fence, a refused step, a revoked
partition and a write that fails are each recovered from as the pipeline promises."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AsyncExitStack

from replaywatch import codec
from replaywatch.config import Settings
from replaywatch.core.types import Batch, BatchCommit
from replaywatch.pipeline import Pipeline
from replaywatch.runtime.adapters import Adapters
from replaywatch.runtime.retry import Backoff
from tests.fakes import FakeConsumer, FakeDeadLetters, FakeDiffStore, FakePublisher, FakeRecord, FakeStore

STEPS = 3
ATTEMPTS = 4


def attempt(partition: int, step: int, n: int, answer: str) -> bytes:
    return codec.encode_attempt({
        "event_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{partition}/{step}/{n}")), "run_id": f"run-{partition}",
        "step_id": f"step-{step}", "attempt": n, "status": "succeeded", "occurred_at": 1_790_000_000_000 + n,
        "output_snapshot": f'{{"answer": "{answer}"}}',
    })  # fmt: skip


def log(partitions: int = 2) -> dict[int, list[FakeRecord]]:
    """Each partition: ``STEPS`` steps of one run, ``ATTEMPTS`` attempts each, step by
    step; attempt 3 of every step drifts. Every attempt after the first is compared."""
    out: dict[int, list[FakeRecord]] = {}
    for p in range(partitions):
        values = [attempt(p, s, n, "drift" if n == 3 else "same") for s in range(STEPS) for n in range(1, ATTEMPTS + 1)]
        out[p] = [FakeRecord(p, offset, value) for offset, value in enumerate(values)]
    return out


COMPARISONS_PER_PARTITION = STEPS * (ATTEMPTS - 1)


class World:
    """The fakes, and a pipeline that opens them."""

    def __init__(self, partitions: int = 2, batch_size: int = 4) -> None:
        self.store, self.diffs, self.dead = FakeStore(), FakeDiffStore(), FakeDeadLetters()
        self.publisher, self.consumer = FakePublisher(), FakeConsumer(log(partitions))
        settings = Settings(batch_size=batch_size, batch_timeout_ms=1, retain_comparisons_days=0,
                            retain_steps_days=0, retain_rule_stats_days=0)  # fmt: skip
        self.pipeline = Pipeline(settings, open=self.open, backoff=quick)

    async def open(self, settings: Settings, stack: AsyncExitStack, retry: Backoff) -> Adapters:
        return Adapters(self.store, self.diffs, self.dead, self.publisher, self.consumer, 1 << 20)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        async with asyncio.timeout(10):
            await self.pipeline.run(stop or asyncio.Event())

    def events(self, partition: int) -> list[tuple[int, str]]:
        return [(e.source_offset, e.verdict) for e in self.publisher.events if e.partition == partition]


def quick(stop: asyncio.Event) -> Backoff:
    return Backoff(stop, first=0.001, most=0.005, grace=0.02)


def expected(partition: int) -> list[tuple[int, str]]:
    return [(s * ATTEMPTS + n - 1, "drift" if n == 3 else "within_tolerance")
            for s in range(STEPS) for n in range(2, ATTEMPTS + 1)]  # fmt: skip


async def test_a_range_is_compared_committed_and_published_once() -> None:
    w = World()
    await w.run()
    assert w.pipeline.completed
    for p in (0, 1):
        assert w.events(p) == expected(p)
    ends = {p: STEPS * ATTEMPTS for p in (0, 1)}
    assert w.store.offsets == ends and w.consumer.advised == ends
    assert w.pipeline.checkpoint.compared == 2 * COMPARISONS_PER_PARTITION
    assert len(w.store.commits) > 1, "the range was written in several statements"
    diffs = {c.diff_sha256 for commit in w.store.commits for c in commit.comparisons if c.diff_sha256}
    assert len(diffs) == 2 * STEPS and diffs <= w.diffs.objects.keys(), "each drift's diff is in S3"


async def test_a_fence_resumes_from_the_offset_the_new_owner_stored() -> None:
    w = World(partitions=1)
    real = w.store.commit_batch
    moved: list[int] = []

    async def another_owner_moves_on(batch: BatchCommit) -> set[str]:
        if len(w.store.commits) == 1 and not moved:  # after our first commit, another consumer commits 4 records
            moved.append(w.store.offsets[0] + 4)
            w.store.offsets[0] = moved[0]
        return await real(batch)

    w.store.commit_batch = another_owner_moves_on  # type: ignore[method-assign]
    await w.run()
    assert moved and {0: moved[0]} in w.consumer.seeks, "resumed from the offset the other owner stored"
    first = w.store.commits[0].offsets[0][1]
    ours = [e for e in w.events(0) if not first <= e[0] < moved[0]]
    assert w.events(0) == ours, "nothing between our last commit and the other owner's offset was said by us"
    assert [e for e in expected(0) if e[0] >= moved[0]] == [e for e in w.events(0) if e[0] >= moved[0]]
    assert w.store.offsets == {0: STEPS * ATTEMPTS}


async def test_a_refused_step_is_dead_lettered_by_the_writer_and_the_rest_committed() -> None:
    w = World(partitions=1)  # step 0 commits first, then step 1's rows are refused
    w.store.refused_steps = {("run-0", "step-1")}
    await w.run()
    refused = [(0, o) for o in range(ATTEMPTS, 2 * ATTEMPTS)]
    assert sorted(w.dead.sent) == refused, "each record of the refused step dead-lettered, once"
    assert w.events(0) == [e for e in expected(0) if not ATTEMPTS <= e[0] < 2 * ATTEMPTS]
    assert ("run-0", "step-1") not in w.store.projections
    assert w.store.offsets == {0: STEPS * ATTEMPTS}
    assert w.pipeline.writer.set_aside == {}, "forgotten once a commit passed them"


async def test_a_revoked_partition_commits_what_was_prepared_and_is_let_go() -> None:
    w = World()
    polls = 0
    real_poll = w.consumer.poll

    async def poll_then_revoke(timeout_ms: int, max_records: int) -> Batch:
        nonlocal polls
        polls += 1
        if polls == 3:
            await w.consumer.rebalance({1})
        return await real_poll(timeout_ms, max_records)

    w.consumer.poll = poll_then_revoke  # type: ignore[method-assign]
    await w.run()
    prepared = w.store.offsets[1]
    assert 0 < prepared < STEPS * ATTEMPTS, "partition 1 was let go part way"
    assert w.events(1) == [e for e in expected(1) if e[0] < prepared], "what was prepared before it was committed"
    assert w.publisher.owned == {0} and 1 not in w.consumer.positions
    assert w.events(0) == expected(0) and w.store.offsets[0] == STEPS * ATTEMPTS


async def test_a_transient_failure_is_retried_and_said_once() -> None:
    w = World()
    w.store.transient_failures = 2
    w.store.lose_replies = 1
    await w.run()
    committed = sorted((r.partition, r.source_offset, r.verdict) for c in w.store.commits for r in c.outbox)
    assert committed == sorted((p, o, v) for p in (0, 1) for o, v in expected(p)), "each comparison committed once"
    offered = [(e.partition, e.source_offset) for e in w.publisher.events]
    assert len(set(offered)) == len(offered), "no event handed to the publisher twice"
    assert w.publisher.reread_partitions, "the commit whose reply was lost: its events are read back from the outbox"
    assert w.store.offsets == {p: STEPS * ATTEMPTS for p in (0, 1)}


async def test_a_write_that_fails_while_stopping_commits_nothing_and_the_run_ends() -> None:
    w = World()
    stop = asyncio.Event()
    real = w.store.commit_batch

    async def fail_and_stop(batch: BatchCommit) -> set[str]:
        if w.store.commits:  # PostgreSQL goes away after the first commit, and the process is told to stop
            w.store.down = True
            stop.set()
        return await real(batch)

    w.store.commit_batch = fail_and_stop  # type: ignore[method-assign]
    await w.run(stop)
    assert len(w.store.commits) == 1 and not w.pipeline.completed
    ends = {p: end for p, (_, end) in w.store.commits[0].offsets.items()}
    assert w.store.offsets == ends, "only the first write committed"
    assert all(e.source_offset < ends[e.partition] for e in w.publisher.events)
