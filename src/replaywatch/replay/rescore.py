"""``replaywatch backfill --rescore``: what other comparison settings would have said
about a range, and, with ``--apply``, the corrections published.

The range is replayed in memory from empty projections under the new settings (so it
should start where the runs start: ``--from beginning`` by default). Each comparison is
set against the last event published for its pair (its attempts), from the history:

- the same verdict: nothing to say;
- another verdict (or a pair never published): a *flip*, counted old -> new in the
  report with its step.

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

from replaywatch.adapters import open_adapters
from replaywatch.batch import outgoing, superseding_id
from replaywatch.compare import Comparison
from replaywatch.config import Settings
from replaywatch.replay.jobs import CountedDeadLetters, ReplaySpec, job_settings, open_store, resolve_ranges, spec_hash
from replaywatch.replay.scan import nothing_stored, scan
from replaywatch.retry import Backoff
from replaywatch.store.jobs import Outcome
from replaywatch.store.postgres import BatchCommit
from replaywatch.stream.publisher import RECORD_OVERHEAD

logger = logging.getLogger(__name__)

CHUNK = 500
"""Events per committed statement."""

Flip = tuple[Any, int, Comparison, Outcome | None]
"""(input record, when its attempt occurred, the new comparison, what was published)"""


def flips(comparisons: list[tuple[Any, int, Comparison]], outcomes: dict[str, Outcome]) -> list[Flip]:
    """The comparisons whose verdict differs from what was last published for their pair."""
    out: list[Flip] = []
    for record, occurred, c in comparisons:
        old = outcomes.get(c.event_id)
        if old is None or old.verdict != c.verdict.value:
            out.append((record, occurred, c, old))
    return out


def report(changed: list[Flip], compared: int, fingerprint: str, live_fingerprint: str) -> dict[str, Any]:
    """Counts by old -> new verdict, and the steps that flip."""
    counts = Counter(f"{old.verdict if old else 'none'} -> {c.verdict.value}" for _, _, c, old in changed)
    return {
        "settings_fingerprint": fingerprint,
        "live_settings_fingerprint": live_fingerprint,
        "compared": compared,
        "unchanged": compared - len(changed),
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
    ranges = await resolve_ranges(live, spec)
    async with open_store(live) as (_, jobs):
        # a resumed job reads the range it first took
        job = await jobs.start("rescore", spec_hash(described), described, ranges) if apply else None
        result = await scan(live, job.ranges if job else ranges, config, nothing_stored)
        outcomes = await jobs.outcomes(c.event_id for _, _, c in result.comparisons)
        changed = flips(result.comparisons, outcomes)
        summary = report(changed, len(result.comparisons), fingerprint, live.compare_config().fingerprint())
        summary |= {"kind": "rescore", "records": result.records, "bad_records": dict(result.bad)}
        if report_path is not None:
            report_path.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
        if job is None:
            summary |= {"state": "report", "published": 0, "seconds": round(time.monotonic() - started, 3)}
            return summary
        js = job_settings(new, job, spec.output_topic)
        published, complete = await _publish(js, changed, stop)
        summary |= {"job": job.job_id, "published": published, "state": "done" if complete else "interrupted"}
        summary["seconds"] = round(time.monotonic() - started, 3)
        if complete:
            await jobs.finish(job.job_id, js.group_id, {k: v for k, v in summary.items() if k != "steps"})
        return summary


async def _publish(js: Settings, changed: list[Flip], stop: asyncio.Event) -> tuple[int, bool]:
    """Commit the flips' events with the job's checkpoint, a partition at a time and in
    source order, then publish them all (unless stopped). (events published, complete)"""
    retry = Backoff(stop)
    fingerprint = js.compare_config().fingerprint()
    async with AsyncExitStack() as stack:
        adapters = await open_adapters(js, stack, retry, consumer=lambda s: None, dead_letters=CountedDeadLetters())
        store, publisher = adapters.store, adapters.publisher
        by_partition: dict[int, list[Flip]] = {}
        for f in sorted(changed, key=lambda f: (f[0].partition, f[0].offset)):
            by_partition.setdefault(f[0].partition, []).append(f)
        checkpoint = await store.load_offsets(set(by_partition))
        publisher.assign(set(by_partition))
        for partition, items in by_partition.items():
            todo = [f for f in items if f[0].offset >= checkpoint.get(partition, -1)]
            for i in range(0, len(todo), CHUNK):
                if stop.is_set():
                    break
                chunk = todo[i : i + CHUNK]
                # the diffs are in S3 before any event refers to them
                diffs = {c.diff.sha256: c for _, _, c, _ in chunk if c.diff is not None}
                await asyncio.gather(*(adapters.artifacts.put(c.diff, c.run_id, c.step_id)
                                       for c in diffs.values() if c.diff is not None))  # fmt: skip
                commit = BatchCommit()
                for record, occurred, c, old in chunk:
                    uri = adapters.artifacts.uri(c.diff.sha256) if c.diff is not None else None
                    row, history = outgoing(
                        record, occurred, c, detected_at_ms=int(time.time() * 1000), diff_uri=uri,
                        max_event_bytes=adapters.output_limit - RECORD_OVERHEAD, settings_fingerprint=fingerprint,
                        supersedes=(c.event_id, old.event_id if old else None),
                        output_schema_id=adapters.output_schema_id,
                    )  # fmt: skip
                    commit.outbox.append(row)
                    commit.comparisons.append(history)
                end = chunk[-1][0].offset + 1
                commit.offsets = {partition: (checkpoint.get(partition), end)}
                await retry.call(_committing(store, commit), "commit re-scored events")
                checkpoint[partition] = end
                if commit.said is None:
                    publisher.reread(commit.offsets)
                else:
                    publisher.offer(commit.offsets, commit.queued())
        drained = False
        while not drained and not stop.is_set():
            drained = await publisher.flush(1.0)
        complete = drained and all(
            checkpoint.get(p, -1) >= items[-1][0].offset + 1 for p, items in by_partition.items()
        )
        return publisher.published, complete


def _committing(store: Any, commit: BatchCommit) -> Any:
    return lambda: store.commit_batch(commit)
