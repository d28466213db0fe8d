"""``replaywatch backfill``: re-read a range of the input topic under the live settings
and say only what was never said.

A backfill is the live pipeline over a bounded range (``RangeConsumer``), under a job
of its own: its own group in PostgreSQL (its checkpoint, committed with its writes),
its own outbox and transactional publisher. It shares the live projections and the
history, so:

- each record is applied to the step as PostgreSQL holds it; a step that the live
  consumer (or another job) changed meanwhile is read again (``StaleProjection``), so
  the two never overwrite each other's work and a record already applied changes
  nothing;
- an event whose id the history holds is never queued again (``commit_batch``): what
  the live consumer said is not said twice, and a second identical backfill publishes
  nothing;
- Ctrl-C stops after the write in flight; the same command again resumes the job from
  its checkpoint, with the end offsets taken when it first started;
- a job interrupted and never resumed is listed by ``--list``, and ``--publish-job``
  publishes what it committed and closes it. Its events cannot be left to a later
  replay instead: the job moved the shared projections on, so no later replay would
  compare those attempts again. A job is never closed with events unpublished.

Bad records are counted by reason, not dead-lettered again (the live consumer did
that), unless ``--dead-letter`` asks for it (a range the live consumer never read).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

from replaywatch.config import Settings
from replaywatch.core.projection import StepProjection
from replaywatch.core.types import StepKey
from replaywatch.exceptions import UsageError
from replaywatch.pipeline import Pipeline
from replaywatch.replay.jobs import CountedDeadLetters, ReplaySpec, job_settings, open_store, resolve_ranges, spec_hash
from replaywatch.replay.progress import run_with_progress
from replaywatch.replay.scan import Emitted, scan
from replaywatch.runtime.adapters import open_adapters
from replaywatch.runtime.retry import Backoff
from replaywatch.store.postgres import PostgresStore
from replaywatch.stream.range_consumer import RangeConsumer, reader

logger = logging.getLogger(__name__)


async def backfill(
    settings: Settings, spec: ReplaySpec, stop: asyncio.Event, *, dead_letter: bool = False
) -> dict[str, Any]:
    """Run (or resume) the backfill job of ``spec``; its summary."""
    described = spec.describe("backfill", settings)
    ranges = await resolve_ranges(settings, spec)
    async with open_store(settings) as (store, jobs):
        job = await jobs.start("backfill", spec_hash(described), described, ranges)
        js = job_settings(settings, job, spec.output_topic)
        resumed_from = await PostgresStore(store.pool, store.schema, js.group_id, js.input_topic).load_offsets(
            job.ranges
        )
        if job.resumed:
            logger.info("resuming backfill %s from its checkpoint %s", job.job_id, resumed_from)
        counted = None if dead_letter else CountedDeadLetters()
        pipeline = Pipeline(
            js,
            consumer=lambda s: RangeConsumer(reader(s), s.input_topic, job.ranges),
            dead_letters=counted,
            closes_rates=False,
        )
        progress = await run_with_progress("backfill", pipeline, job.ranges, resumed_from, stop)
        summary = {
            "job": job.job_id,
            "kind": "backfill",
            "state": "done" if pipeline.completed else "interrupted",
            "resumed": job.resumed,
            "output_topic": js.output_topic,
            "ranges": {str(p): list(r) for p, r in job.ranges.items()},
            "records": progress.records,
            "done": progress.done,
            "total": progress.total,
            "compared": pipeline.checkpoint.compared,
            "published": pipeline.publisher.published,
            "already_published": pipeline.checkpoint.compared - pipeline.publisher.published,
            "bad_records": dict(counted.reasons) if counted else "dead-lettered",
            "seconds": round(progress.seconds(), 3),
            "rate": round(progress.records / max(progress.seconds(), 1e-9), 1),
        }
        if pipeline.completed:
            await jobs.finish(job.job_id, js.group_id, summary)
        return summary


async def dry_run(settings: Settings, spec: ReplaySpec, emit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """What a backfill of ``spec`` would publish now (each event through ``emit``);
    writes nothing anywhere."""
    ranges = await resolve_ranges(settings, spec)
    config = settings.compare_config()
    async with open_store(settings) as (store, jobs):

        async def stored(keys: list[StepKey]) -> dict[StepKey, StepProjection]:
            return await store.load_projections(keys, config)

        async def unsaid(emitted: Emitted) -> Emitted:  # kept a batch at a time: never the whole range
            said = await jobs.published(c.event_id for _, _, c in emitted)
            return [item for item in emitted if item[2].event_id not in said]

        result = await scan(settings, ranges, config, stored, keep=unsaid)
    new = [(r, c) for r, _, c in result.comparisons]
    for record, c in new:
        emit(
            {
                "event_id": c.event_id,
                "verdict": c.verdict.value,
                "run_id": c.run_id,
                "step_id": c.step_id,
                "baseline_attempt": c.baseline_attempt,
                "current_attempt": c.current_attempt,
                "source_partition": record.partition,
                "source_offset": record.offset,
                "settings_fingerprint": config.fingerprint(),
            }
        )
    return {
        "kind": "backfill",
        "state": "dry-run",
        "output_topic": spec.output_topic or settings.output_topic,
        "ranges": {str(p): list(r) for p, r in ranges.items()},
        "records": result.records,
        "compared": result.compared,
        "would_publish": len(new),
        "already_published": result.compared - len(new),
        "by_verdict": dict(Counter(c.verdict.value for _, c in new)),
        "bad_records": dict(result.bad),
    }


async def list_jobs(settings: Settings) -> list[dict[str, Any]]:
    """The replay jobs that never finished (interrupted and not resumed, or running now),
    with the events each committed and has not published."""
    async with open_store(settings) as (_, jobs):
        return await jobs.unfinished(settings.group_id)


async def publish_job(settings: Settings, job_id: str, stop: asyncio.Event) -> dict[str, Any]:
    """Publish what an abandoned job committed (its outbox), without reading its range
    again, then close it (``abandoned``): its events are said once, none is dropped."""
    async with open_store(settings) as (_, jobs):
        job = await jobs.get(job_id)
        if job is None:
            raise UsageError(f"no unfinished replay job {job_id!r}; `replaywatch backfill --list` lists them")
        js = job_settings(settings, job, job.spec.get("output_topic"))
        retry = Backoff(stop)
        async with AsyncExitStack() as stack:
            adapters = await open_adapters(js, stack, retry, consumer=None,
                                           dead_letters=CountedDeadLetters())  # fmt: skip
            adapters.publisher.assign(set(job.ranges))
            drained = False
            while not drained and not stop.is_set():
                drained = await adapters.publisher.flush(1.0)
                adapters.publisher.raise_failure()
            published = adapters.publisher.published
        summary = {"job": job_id, "kind": job.kind, "state": "abandoned" if drained else "interrupted",
                   "published": published}  # fmt: skip
        if drained:
            await jobs.finish(job_id, js.group_id, summary, state="abandoned")
        return summary
