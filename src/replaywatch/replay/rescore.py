"""``replaywatch backfill --rescore``: what other comparison settings would have said
about a range, and, with ``--apply``, the corrections published.

The range is replayed in memory from empty projections under the new settings (so it
should start where the runs start: ``--from beginning`` by default), and it ends where
the live consumer has committed: what it has not compared yet has said nothing to
correct, and a re-scoring run twice reads the same records. The outcome of a pair (its
baseline and current attempts) is its verdict. Each comparison is set against the last
event published for its pair, from the history:

- the same verdict: nothing to say;
- another verdict: a *flip*, counted old -> new in the report with its step;
- no event published for the pair (the new settings pair other attempts, say with
  another comparison base): nothing to correct; counted as ``unpublished``.

Only the flips are kept in memory, a batch at a time.

Without ``--apply`` the report is all (``--report``, JSON) and nothing is published.
With it, each flip is published as a new event under the new settings' fingerprint,
naming the event it supersedes; its id is derived from the pair and the fingerprint,
and it enters the history, so the same re-scoring run again finds nothing to say. The
events go through the job's outbox and its transactional publisher, a partition's rows
in source order with the job's checkpoint in the same statement: Ctrl-C and a rerun
publish each once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import orjson

from replaywatch.compare import Comparison
from replaywatch.config import Settings
from replaywatch.core.batch import BatchResult, outgoing, superseding_id
from replaywatch.core.types import BatchCommit
from replaywatch.exceptions import ReplaywatchError
from replaywatch.replay.jobs import CountedDeadLetters, ReplaySpec, job_settings, open_store, resolve_ranges, spec_hash
from replaywatch.replay.scan import nothing_stored, scan
from replaywatch.runtime.adapters import Adapters, open_adapters
from replaywatch.runtime.retry import Backoff
from replaywatch.stages.checkpoint import Checkpoint
from replaywatch.stages.writer import PreparedBatch, Writer
from replaywatch.store.jobs import Outcome
from replaywatch.stream.publisher import RECORD_OVERHEAD

logger = logging.getLogger(__name__)

CHUNK = 500
"""Events per committed statement."""

Flip = tuple[Any, int, Comparison, Outcome | None]
"""(input record, when its attempt occurred, the new comparison, what was published)"""


def flips(comparisons: list[tuple[Any, int, Comparison]], outcomes: dict[str, Outcome]) -> list[Flip]:
    """The comparisons of published pairs whose verdict differs from what was last
    published for them (a pair never published has nothing to correct)."""
    out: list[Flip] = []
    for record, occurred, c in comparisons:
        old = outcomes.get(c.event_id)
        if old is not None and old.verdict != c.verdict.value:
            out.append((record, occurred, c, old))
    return out


def report(
    changed: list[Flip], compared: int, unpublished: int, fingerprint: str, live_fingerprint: str
) -> dict[str, Any]:
    """Counts by old -> new verdict, and the steps that flip, in source order."""
    changed = sorted(changed, key=lambda f: (f[0].partition, f[0].offset, f[2].event_id))
    counts = Counter(f"{old.verdict if old else 'none'} -> {c.verdict.value}" for _, _, c, old in changed)
    return {
        "settings_fingerprint": fingerprint,
        "live_settings_fingerprint": live_fingerprint,
        "compared": compared,
        "unchanged": compared - len(changed) - unpublished,
        "unpublished": unpublished,
        "flipped": len(changed),
        "counts": dict(sorted(counts.items())),
        "steps": [
            {
                "run_id": c.run_id,
                "step_id": c.step_id,
                "baseline_attempt": c.baseline_attempt,
                "current_attempt": c.current_attempt,
                "old_verdict": old.verdict if old else None,
                "new_verdict": c.verdict.value,
                "supersedes": old.event_id if old else None,
                "event_id": superseding_id(c.event_id, fingerprint),
            }
            for _, _, c, old in changed
        ],
    }


async def rescore(
    live: Settings,
    new: Settings,
    spec: ReplaySpec,
    stop: asyncio.Event,
    *,
    apply: bool,
    report_path: Path | None,
) -> dict[str, Any]:
    """Re-score ``spec``'s range under ``new`` settings; publish the flips with ``apply``."""
    started = time.monotonic()
    config = new.compare_config()
    fingerprint = config.fingerprint()
    described = spec.describe("rescore", new, live_settings=live.compare_config().fingerprint())
    async with open_store(live) as (store, jobs):
        # up to what the live consumer has committed; a resumed job reads the range it first took
        resolved = await resolve_ranges(live, spec)
        ranges = within_live(resolved, await store.load_offsets(set(resolved)))
        job = await jobs.start("rescore", spec_hash(described), described, ranges) if apply else None
        unpublished = 0
        changed: list[Flip] = []

        async def flipped(emitted: list[tuple[Any, int, Comparison]]) -> list[tuple[Any, int, Comparison]]:
            nonlocal unpublished
            outcomes = await jobs.outcomes(c.event_id for _, _, c in emitted)
            unpublished += sum(1 for _, _, c in emitted if c.event_id not in outcomes)
            changed.extend(flips(emitted, outcomes))
            return []  # the flips are kept here, with the outcome each one corrects

        result = await scan(live, job.ranges if job else ranges, config, nothing_stored, keep=flipped)
        summary = report(changed, result.compared, unpublished, fingerprint, live.compare_config().fingerprint())
        summary |= {"kind": "rescore", "records": result.records, "bad_records": dict(result.bad)}
        if report_path is not None:
            report_path.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
        if job is None:
            summary |= {"state": "report", "published": 0, "seconds": round(time.monotonic() - started, 3)}
            return summary
        js = job_settings(new, job, spec.output_topic)
        published, complete = await _publish(js, changed, set(job.ranges), stop)
        summary |= {"job": job.job_id, "published": published, "state": "done" if complete else "interrupted"}
        summary["seconds"] = round(time.monotonic() - started, 3)
        if complete:
            await jobs.finish(job.job_id, js.group_id, {k: v for k, v in summary.items() if k != "steps"})
        return summary


def within_live(ranges: dict[int, tuple[int, int]], live: dict[int, int]) -> dict[int, tuple[int, int]]:
    """``ranges`` cut at the live consumer's committed offsets (a partition it never
    committed: nothing of it)."""
    return {p: (start, max(start, min(end, live.get(p, start)))) for p, (start, end) in ranges.items()}


async def _publish(js: Settings, changed: list[Flip], partitions: set[int], stop: asyncio.Event) -> tuple[int, bool]:
    """Commit the flips' events with the job's checkpoint, a partition at a time and in
    source order, through the pipeline's writer and checkpoint, then publish them all
    (unless stopped). Every partition of the job is published, flips or not: a resumed
    job's flips committed before it was interrupted are in its outbox, no longer in
    ``changed``. (events published, complete)"""
    retry = Backoff(stop)
    fingerprint = js.compare_config().fingerprint()
    async with AsyncExitStack() as stack:
        adapters = await open_adapters(js, stack, retry, consumer=None, dead_letters=CountedDeadLetters())
        store, publisher = adapters.store, adapters.publisher
        writer = Writer(store=store, diffs=adapters.artifacts, dead_letters=adapters.dead_letters, retry=retry)
        checkpoint = Checkpoint(publisher=publisher)
        by_partition: dict[int, list[Flip]] = {}
        for f in sorted(changed, key=lambda f: (f[0].partition, f[0].offset)):
            by_partition.setdefault(f[0].partition, []).append(f)
        checkpoint.committed.update(await store.load_offsets(partitions))
        publisher.assign(partitions)
        for partition, items in by_partition.items():
            todo = [f for f in items if f[0].offset >= checkpoint.committed.get(partition, -1)]
            for i in range(0, len(todo), CHUNK):
                if stop.is_set():
                    break
                writer.enqueue(_corrections(todo[i : i + CHUNK], checkpoint.committed.get(partition), fingerprint,
                                            adapters))  # fmt: skip
                settled = await writer.settle(0, 0)
                for committed in settled.committed:
                    checkpoint.apply(committed)
                if settled.voided is not None:
                    raise ReplaywatchError(f"re-scored events not committed: {settled.voided.reason}")
        drained = False
        while not drained and not stop.is_set():
            drained = await publisher.flush(1.0)
        complete = drained and all(
            checkpoint.committed.get(p, -1) >= items[-1][0].offset + 1 for p, items in by_partition.items()
        )  # every partition's outbox, flips or not, was drained: the job's rows can go
        return publisher.published, complete


def _corrections(chunk: list[Flip], start: int | None, fingerprint: str, adapters: Adapters) -> PreparedBatch:
    """A chunk of one partition's flips as a batch to write: each flip's event, naming
    the event it supersedes, and its diff."""
    commit = BatchCommit()
    detected_at_ms = int(time.time() * 1000)
    for record, occurred, c, old in chunk:
        uri = adapters.artifacts.uri(c.diff.sha256) if c.diff is not None else None
        row, history = outgoing(
            record, occurred, c, detected_at_ms=detected_at_ms, diff_uri=uri,
            max_event_bytes=adapters.output_limit - RECORD_OVERHEAD, settings_fingerprint=fingerprint,
            supersedes=(c.event_id, old.event_id if old else None), output_schema_id=adapters.output_schema_id,
        )  # fmt: skip
        commit.outbox.append(row)
        commit.comparisons.append(history)
    last = chunk[-1][0]
    commit.offsets = {last.partition: (start, last.offset + 1)}
    diffs = list({c.diff.sha256: c for _, _, c, _ in chunk if c.diff is not None}.values())
    return PreparedBatch(0, len(chunk), 0, BatchResult(), commit, diffs, time.perf_counter(), detected_at_ms)
