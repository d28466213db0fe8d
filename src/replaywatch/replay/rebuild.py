"""``replaywatch rebuild``: the step projections built again from the topic, and swapped
in at once, while the live consumer keeps running.

1. Build: the live pipeline, under the live settings, over the topic from its
   beginning, into a schema of its own (``{schema}_rebuild``): a fresh set of tables
   that no reader sees. Diffs are not uploaded and nothing is published (the live
   consumer did that). Rounds follow the live consumer's committed offsets until the
   rebuild is within ``SWAP_WITHIN`` records of them.
2. Swap, in one transaction: lock the live table against writers (readers go on),
   catch up to the live consumer's offsets (final now: no live write can commit), shift
   the rebuilt rows' versions above every live version (so every step the live
   consumer holds in memory is stale, and it reads the rebuilt one), drop the live
   table and move the rebuilt one in. A reader sees the old table or the new one,
   never a half-built one; a live write that waited on the lock finds its steps
   stale, and does its batch again on the new table.

Ctrl-C keeps the rebuild schema and its checkpoint; the same command resumes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from replaywatch.compare import Diff
from replaywatch.config import Settings
from replaywatch.exceptions import NotFound, UsageError
from replaywatch.pipeline import Pipeline
from replaywatch.replay.jobs import CountedDeadLetters, ReplaySpec, open_store, resolve_ranges, spec_hash
from replaywatch.replay.progress import run_with_progress
from replaywatch.replay.ranges import Ranges
from replaywatch.store.errors import translate_postgres_errors
from replaywatch.store.postgres import PostgresStore
from replaywatch.stream.range_consumer import RangeConsumer, reader

logger = logging.getLogger(__name__)

SWAP_WITHIN = 2000
"""Records the rebuild may trail the live consumer by when it locks and swaps."""
MAX_ROUNDS = 20


class NoDiffs:
    """A rebuild's diff store: the live consumer stored the diffs already."""

    async def put(self, diff: Diff, run_id: str, step_id: str) -> str:
        return self.uri(diff.sha256)

    async def get(self, sha256: str) -> tuple[bytes, dict[str, Any]]:
        raise NotFound(f"a rebuild stores no diffs ({sha256})")

    def uri(self, sha256: str) -> str:
        return f"unstored:{sha256}"


def rebuild_schema(schema: str) -> str:
    name = f"{schema}_rebuild"
    if len(name) > 63:
        raise UsageError(f"the schema {schema!r} is too long for its rebuild schema {name!r} (63 characters)")
    return name


async def rebuild(settings: Settings, stop: asyncio.Event) -> dict[str, Any]:
    started = time.monotonic()
    scratch = rebuild_schema(settings.postgres_schema)
    described = {"kind": "rebuild", "input_topic": settings.input_topic, "group": settings.group_id,
                 "schema": settings.postgres_schema, "settings": settings.compare_config().fingerprint()}  # fmt: skip
    topic = await resolve_ranges(settings, ReplaySpec())  # every partition, from its beginning
    async with open_store(settings) as (store, jobs):
        job = await jobs.start("rebuild", spec_hash(described), described, topic)
        if not job.resumed:  # what an abandoned rebuild left
            await _execute(store, f'DROP SCHEMA IF EXISTS "{scratch}" CASCADE')
        rb = settings.model_copy(update={"postgres_schema": scratch, "group_id": f"{settings.group_id}.{job.job_id}"})
        built = PostgresStore(store.pool, scratch, rb.group_id, rb.input_topic)
        await built.migrate()
        firsts = {p: first for p, (first, _) in job.ranges.items()}
        records = 0
        for _ in range(MAX_ROUNDS):
            target = await _live_offsets(store, firsts)
            done, complete = await _round(rb, built, firsts, target, stop)
            records += done
            if not complete:
                return _summary(job.job_id, "interrupted", records, started)
            now = await _live_offsets(store, firsts)
            if sum(now[p] - target[p] for p in now) <= SWAP_WITHIN:
                break
        records += await _swap(store, built, rb, firsts, stop)
        await _execute(store, f'DROP SCHEMA IF EXISTS "{scratch}" CASCADE')
        summary = _summary(job.job_id, "done", records, started)
        await jobs.finish(job.job_id, rb.group_id, summary)
        return summary


def _summary(job_id: str, state: str, records: int, started: float) -> dict[str, Any]:
    seconds = time.monotonic() - started
    return {"job": job_id, "kind": "rebuild", "state": state, "records": records,
            "seconds": round(seconds, 3), "rate": round(records / max(seconds, 1e-9), 1)}  # fmt: skip


async def _live_offsets(store: PostgresStore, firsts: dict[int, int]) -> dict[int, int]:
    """How far the live consumer committed (a partition it never committed: nothing)."""
    stored = await store.load_offsets(set(firsts))
    return {p: max(first, stored.get(p, first)) for p, first in sorted(firsts.items())}


async def _round(
    rb: Settings, built: PostgresStore, firsts: dict[int, int], target: dict[int, int], stop: asyncio.Event
) -> tuple[int, bool]:
    """Build up to ``target`` from the rebuild's checkpoint; (records covered, whether it got there)."""
    ranges: Ranges = {p: (firsts[p], end) for p, end in target.items()}
    checkpoint = await built.load_offsets(set(ranges))
    pipeline = Pipeline(
        rb,
        consumer=lambda s: RangeConsumer(reader(s), s.input_topic, ranges),
        diffs=NoDiffs(),
        dead_letters=CountedDeadLetters(),
        publish=False,
        closes_rates=False,
    )
    progress = await run_with_progress("rebuild", pipeline, ranges, checkpoint, stop)
    return progress.records, pipeline.completed


async def _swap(store: PostgresStore, built: PostgresStore, rb: Settings, firsts: dict[int, int],
                stop: asyncio.Event) -> int:  # fmt: skip
    live, scratch = f'"{store.schema}"', f'"{built.schema}"'
    async with (
        translate_postgres_errors("swap the rebuilt projections"),
        store.pool.acquire() as conn,
        conn.transaction(),
    ):
        # writers wait from here (readers go on); a write in flight commits first
        await conn.execute(f"LOCK TABLE {live}.step_projection IN SHARE ROW EXCLUSIVE MODE")
        target = await _live_offsets(store, firsts)
        done, complete = await _round(rb, built, firsts, target, stop)
        reached = await built.load_offsets(set(target))
        short = {p: (reached.get(p), o) for p, o in target.items() if o > firsts[p] and reached.get(p) != o}
        if not complete or short:
            raise UsageError(f"the rebuild did not reach the live offsets (rebuilt, live): {short}; run it again")
        await conn.execute(
            f"UPDATE {scratch}.step_projection SET version = version + "
            f"(SELECT coalesce(max(version), 0) FROM {live}.step_projection)"
        )
        await conn.execute(f"DROP TABLE {live}.step_projection")
        await conn.execute(f"ALTER TABLE {scratch}.step_projection SET SCHEMA {live}")
    logger.info("rebuilt projections swapped in at the live offsets %s", target)
    return done


async def _execute(store: PostgresStore, sql: str) -> None:
    async with translate_postgres_errors("prepare the rebuild"):
        await store.pool.execute(sql)
