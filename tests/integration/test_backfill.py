"""Backfill, re-scoring and rebuild on the real stack, with the live consumer running."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from replaywatch import demo
from replaywatch.compare import comparison_id
from replaywatch.core.batch import superseding_id
from replaywatch.pipeline import Pipeline
from replaywatch.replay.backfill import backfill, dry_run
from replaywatch.replay.jobs import CountedDeadLetters, ReplaySpec, job_settings, open_store, resolve_ranges, spec_hash
from replaywatch.replay.rebuild import rebuild
from replaywatch.replay.rescore import rescore
from replaywatch.stream.range_consumer import RangeConsumer, reader
from tests.conftest import Endpoints
from tests.faults.harness import expected_for
from tests.integration.streaming import Lane, oracle_projection

pytestmark = pytest.mark.integration

FLEET = demo.FleetSpec(runs=1000, steps=5, attempts=4, drift=0.2, duplicates=0.05, out_of_order=0.2,
                       snapshot_bytes=200, seed=23)  # fmt: skip
"""20,000 attempts and ~1,000 duplicates."""


async def lanes(endpoints: Endpoints, bucket: str, pg_schemas: Any, n: int) -> list[Lane]:
    """``n`` lanes reading one input topic, each with its own schema, group and output topic."""
    first = Lane(endpoints, await pg_schemas(), bucket)
    await first.create_topics()
    out = [first]
    for _ in range(n - 1):
        lane = Lane(endpoints, await pg_schemas(), bucket)
        lane.extra = {"input_topic": first.settings().input_topic}
        await lane.create_topics()
        out.append(lane)
    return out


def once(events: list[dict[str, Any]]) -> dict[str, str]:
    """event_id -> verdict, asserting that no id came twice."""
    ids = Counter(e["event_id"] for e in events)
    doubled = {i: n for i, n in ids.items() if n > 1}
    assert not doubled, f"{len(doubled)} events published more than once, e.g. {list(doubled.items())[:3]}"
    return {e["event_id"]: e["verdict"] for e in events}


async def run_backfill(lane: Lane, spec: ReplaySpec | None = None, stop: asyncio.Event | None = None) -> dict[str, Any]:
    return await backfill(lane.settings(), spec or ReplaySpec(), stop or asyncio.Event())


async def test_backfill_matches_live_processing_and_says_each_comparison_once_beside_it(
    endpoints: Endpoints, bucket: str, pg_schemas: Any
) -> None:
    events = demo.synthetic_fleet(FLEET)
    assert len(events) > 20_000
    live, alone, both = await lanes(endpoints, bucket, pg_schemas, 3)
    config = live.settings().compare_config()
    expected = demo.expected_comparisons(events, config)
    await live.send(events)

    # live processing alone: the reference
    async with live.pipeline():
        assert once(await live.outputs(want=len(expected), timeout=180)) == expected
    reference = await live.projections()
    assert reference == oracle_projection(events, config)

    # a backfill alone, into a fresh schema: the same projections, each comparison published once
    summary = await run_backfill(alone)
    assert summary["state"] == "done" and summary["records"] == len(events)
    assert summary["published"] == len(expected) and summary["bad_records"] == {}
    assert await alone.projections() == reference
    assert once(await alone.outputs(want=len(expected), timeout=60)) == expected
    # the same backfill again publishes nothing: the history holds every id
    again = await run_backfill(alone)
    assert again["state"] == "done" and again["published"] == 0 and again["compared"] == 0
    # even with the projections lost: every comparison is made again, and none said again
    conn = await asyncpg.connect(endpoints.postgres_dsn)
    try:
        await conn.execute(f'TRUNCATE "{alone.schema}".step_projection')
    finally:
        await conn.close()
    again = await run_backfill(alone)
    assert again["compared"] == len(expected) and again["published"] == 0
    assert again["already_published"] == len(expected)
    assert await alone.projections() == reference
    assert len(await alone.outputs(want=len(expected) + 1, timeout=3)) == len(expected)

    # the live consumer and a backfill over the same records at the same time
    async with both.pipeline():
        summary = await run_backfill(both)
        assert summary["state"] == "done"
        published = once(await both.outputs(want=len(expected), timeout=120))
    assert published == expected
    assert await both.projections() == reference


async def test_a_timestamp_start_resolves_to_the_first_offset_at_or_after_it(
    endpoints: Endpoints, bucket: str, pg_schemas: Any
) -> None:
    (lane,) = await lanes(endpoints, bucket, pg_schemas, 1)
    s = lane.settings()
    base = 1_790_000_000_000
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap)
    await producer.start()
    try:
        for partition in (0, 1):
            for i in range(10):  # partition 0: a record every second; partition 1: every two seconds
                ts = base + i * 1000 * (partition + 1)
                event = {**demo.synthetic_fleet(replace(FLEET, runs=1, steps=1, attempts=1))[0], "occurred_at": ts}
                await producer.send_and_wait(s.input_topic, _encoded(event), partition=partition, timestamp_ms=ts)
    finally:
        await producer.stop()
    at = "2026-09-21T14:13:25Z"  # base + 5 s
    ranges = await resolve_ranges(s, ReplaySpec(start=at))
    assert ranges[0] == (5, 10) and ranges[1] == (3, 10) and ranges[2] == (0, 0) and ranges[3] == (0, 0)
    # --to a time: exclusive; the same moment without a zone is UTC
    ranges = await resolve_ranges(s, ReplaySpec(start="beginning", end="2026-09-21T14:13:25", partitions="0,1"))
    assert ranges == {0: (0, 5), 1: (0, 3)}
    # a time after every record: nothing to read
    ranges = await resolve_ranges(s, ReplaySpec(start="2030-01-01T00:00:00+00:00", partitions="0"))
    assert ranges == {0: (10, 10)}
    # the dry run reads exactly that range and changes nothing
    seen: list[dict[str, Any]] = []
    summary = await dry_run(s, ReplaySpec(start=at, partitions="0"), seen.append)
    assert summary["records"] == 5 and summary["ranges"] == {"0": [5, 10]}
    assert await lane.projections() == {}


def _encoded(event: dict[str, Any]) -> bytes:
    from replaywatch import codec

    return codec.encode_attempt(event)


def usage_attempt(run: str, step: str, n: int, tokens: float) -> dict[str, Any]:
    snapshot = {"message": "same", "metrics": {"tokens": tokens, "cost": 1.0}}
    return {"event_id": str(uuid.uuid4()), "run_id": run, "step_id": step, "attempt": n, "status": "succeeded",
            "occurred_at": 1_790_000_000_000 + n, "output_snapshot": orjson.dumps(snapshot).decode()}  # fmt: skip


async def test_rescoring_with_a_looser_tolerance_publishes_exactly_the_flips(
    endpoints: Endpoints, bucket: str, pg_schemas: Any, tmp_path: Any
) -> None:
    (lane,) = await lanes(endpoints, bucket, pg_schemas, 1)
    # token changes of 0-12 %: under the live tolerance (0) every change drifts; under 5.5 % only those over it
    changes = {f"step-{i}": i for i in range(13)}
    events = []
    for run in range(6):
        for step, pct in changes.items():
            events += [
                usage_attempt(f"run-{run}", step, 1, 1000),
                usage_attempt(f"run-{run}", step, 2, 1000 + 10 * pct),
            ]
    await lane.send(events)
    live_ids = {comparison_id(f"run-{r}", s, 1, 2) for r in range(6) for s in changes}
    flipped = {comparison_id(f"run-{r}", s, 1, 2) for r in range(6) for s, pct in changes.items() if 0 < pct <= 5}
    async with lane.pipeline() as pipeline:
        published = once(await lane.outputs(want=len(live_ids)))
        assert set(published) == live_ids
        assert Counter(published.values()) == {"drift": 6 * 12, "within_tolerance": 6}

        looser = lane.settings().model_copy(update={"tokens_tolerance": 0.055})
        fingerprint = looser.compare_config().fingerprint()
        # without --apply: the report, and nothing published
        report_file = tmp_path / "report.json"
        summary = await rescore(lane.settings(), looser, ReplaySpec(), asyncio.Event(), apply=False,
                                report_path=report_file)  # fmt: skip
        assert summary["counts"] == {"drift -> within_tolerance": len(flipped)}
        assert summary["unchanged"] == len(live_ids) - len(flipped) and summary["published"] == 0
        assert json.loads(report_file.read_text())["flipped"] == len(flipped)
        assert {comparison_id(s["run_id"], s["step_id"], 1, 2) for s in summary["steps"]} == flipped
        assert len(await lane.outputs(want=len(live_ids) + 1, timeout=3)) == len(live_ids)

        # with --apply: exactly the flips, each naming the event it supersedes
        summary = await rescore(lane.settings(), looser, ReplaySpec(), asyncio.Event(), apply=True, report_path=None)
        assert summary["state"] == "done" and summary["published"] == len(flipped)
        out = await lane.outputs(want=len(live_ids) + len(flipped))
        new = [e for e in out if e["supersedes"] is not None]
        assert {e["supersedes"] for e in new} == flipped and len(new) == len(flipped)
        for e in new:
            assert e["event_id"] == superseding_id(e["supersedes"], fingerprint)
            assert e["verdict"] == "within_tolerance" and e["settings_fingerprint"] == fingerprint
            assert e["tolerance_tokens"] == 0.055
        live_fp = lane.settings().compare_config().fingerprint()
        assert {e["settings_fingerprint"] for e in out if e["supersedes"] is None} == {live_fp}
        # the same re-scoring again finds nothing to say
        again = await rescore(lane.settings(), looser, ReplaySpec(), asyncio.Event(), apply=True, report_path=None)
        assert again["flipped"] == 0 and again["published"] == 0
        assert len(once(await lane.outputs(want=len(out) + 1, timeout=3))) == len(out)
        assert pipeline.checkpoint.processed == len(events)


async def processed(pipeline: Any, records: int, timeout: float = 60) -> None:
    """Wait until the live pipeline has committed ``records`` records."""
    async with asyncio.timeout(timeout):
        while pipeline.checkpoint.processed < records:
            await asyncio.sleep(0.05)


def phases(events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], ...]:
    """The fleet's events in three phases by attempt: 1-2, 3-4, 5-6 (each in send order)."""
    return tuple([e for e in events if lo <= e["attempt"] <= lo + 1] for lo in (1, 3, 5))


@asynccontextmanager
async def live_from_now(lane: Lane) -> AsyncIterator[Any]:
    """The live consumer of a new group, starting at the end of the topic (what is in it
    already is skipped: the history a backfill or a rebuild has to add)."""
    lane.extra = {**lane.extra, "auto_offset_reset": "latest"}
    async with lane.pipeline() as pipeline:
        async with asyncio.timeout(30):  # positioned at the end before anything new is sent
            while not pipeline.owned_partitions:
                await asyncio.sleep(0.05)
        yield pipeline


async def test_a_backfill_of_what_the_live_consumer_skipped_is_not_overwritten_by_it(
    endpoints: Endpoints, bucket: str, pg_schemas: Any
) -> None:
    """The live consumer keeps the steps it wrote in memory; a backfill then writes the
    same steps. The live consumer's next write of each step must build on the
    backfill's, not on its memory: attempt 1 (from the backfill) stays the baseline."""
    (lane,) = await lanes(endpoints, bucket, pg_schemas, 1)
    events = demo.synthetic_fleet(replace(FLEET, runs=300, attempts=6, seed=37))
    skipped, seen, later = phases(events)
    config = lane.settings().compare_config()
    await lane.send(skipped)
    async with live_from_now(lane) as pipeline:
        await lane.send(seen)
        await processed(pipeline, len(seen))
        ends = await lane.end_offsets()
        upto = ",".join(f"{p}:{o}" for p, o in ends.items())
        summary = await run_backfill(lane, ReplaySpec(end=upto))
        assert summary["state"] == "done" and summary["published"] > 0
        await lane.send(later)
        await processed(pipeline, len(seen) + len(later))
        # every step: baseline attempt 1, current 6, as one pass over all the events says
        assert await lane.projections() == oracle_projection(events, config)
        once(await lane.outputs(want=summary["published"] + pipeline.checkpoint.compared, timeout=60))


async def test_rebuild_swaps_at_once_while_a_reader_polls_and_the_live_consumer_runs(
    endpoints: Endpoints, bucket: str, pg_schemas: Any
) -> None:
    (lane,) = await lanes(endpoints, bucket, pg_schemas, 1)
    events = demo.synthetic_fleet(replace(FLEET, runs=300, attempts=6, seed=31))
    skipped, seen, later = phases(events)
    config = lane.settings().compare_config()
    table = f'"{lane.schema}".step_projection'
    await lane.send(skipped)
    async with live_from_now(lane) as pipeline:
        await lane.send(seen)
        await processed(pipeline, len(seen))
        assert await lane.projections() == oracle_projection(seen, config)
        conn = await asyncpg.connect(endpoints.postgres_dsn)
        try:
            # and a bug lost some steps
            await conn.execute(f"DELETE FROM {table} WHERE step_id IN ('step-1', 'step-2')")
            broken = await conn.fetchval(f"SELECT count(*) FROM {table}")
            full = len(oracle_projection(skipped + seen, config))
            assert broken < full

            seen_counts: Counter[int] = Counter()
            errors: list[str] = []
            done = asyncio.Event()

            async def reader() -> None:
                while not done.is_set():
                    try:
                        seen_counts[await conn.fetchval(f"SELECT count(*) FROM {table}")] += 1
                    except Exception as exc:  # a reader must never find the table missing
                        errors.append(repr(exc))
                    await asyncio.sleep(0.002)

            polling = asyncio.create_task(reader())
            summary = await rebuild(lane.settings(), asyncio.Event())
            async with asyncio.timeout(10):  # the reader has seen the table as it is now
                while not seen_counts[full]:
                    await asyncio.sleep(0.01)
            done.set()
            await polling
        finally:
            await conn.close()
        assert summary["state"] == "done" and summary["records"] == len(skipped) + len(seen)
        assert errors == []
        assert set(seen_counts) <= {broken, full} and seen_counts[broken] > 0 and seen_counts[full] > 0
        assert await lane.projections() == oracle_projection(skipped + seen, config)

        # the live consumer goes on over the rebuilt table: each step it held is read again
        await lane.send(later)
        await processed(pipeline, len(seen) + len(later))
        assert await lane.projections() == oracle_projection(events, config)


async def test_sigint_halfway_then_the_same_command_completes_with_nothing_doubled(
    endpoints: Endpoints, bucket: str, pg_schemas: Any
) -> None:
    live, replayed = await lanes(endpoints, bucket, pg_schemas, 2)
    events = demo.synthetic_fleet(replace(FLEET, seed=41))
    config = live.settings().compare_config()
    expected = demo.expected_comparisons(events, config)
    await live.send(events)
    env = {**os.environ, **replayed.env, "REPLAYWATCH_LOG_LEVEL": "INFO"}
    command = [sys.executable, "-m", "replaywatch", "backfill", "--json"]

    async with replayed.pipeline() as pipeline:  # the live consumer of the same schema
        first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            async with asyncio.timeout(120):  # until the job has committed a part of the range
                while (done := await _job_progress(replayed)) < len(events) // 5:
                    await asyncio.sleep(0.05)
            first.send_signal(signal.SIGINT)
            out, err = await asyncio.to_thread(first.communicate, timeout=60)
        finally:
            if first.poll() is None:
                first.kill()
        assert first.returncode == 130, err.decode()[-2000:]
        interrupted = json.loads(out)
        assert interrupted["state"] == "interrupted" and done <= interrupted["done"] < len(events)

        second = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, timeout=300)
        assert second.returncode == 0, second.stderr.decode()[-2000:]
        resumed = json.loads(second.stdout)
        assert resumed["state"] == "done" and resumed["resumed"] is True and resumed["job"] == interrupted["job"]
        assert resumed["done"] == resumed["total"] == len(events)
        assert resumed["records"] == len(events) - interrupted["done"]

        published = once(await replayed.outputs(want=len(expected), timeout=120))
        assert published == expected
        assert pipeline.checkpoint.processed == len(events)
    assert await replayed.projections() == oracle_projection(events, config)


async def _job_progress(lane: Lane) -> int:
    """Offsets the lane's backfill job has committed (its checkpoint rows)."""
    conn = await asyncpg.connect(lane.endpoints.postgres_dsn)
    try:
        return int(
            await conn.fetchval(
                f'SELECT coalesce(sum(next_offset), 0) FROM "{lane.schema}".consumer_offset WHERE group_id LIKE $1',
                f"{lane.settings().group_id}.backfill-%",
            )
        )
    except asyncpg.UndefinedTableError:
        return 0
    finally:
        await conn.close()


def messy_fleet(seed: int, runs: int = 5, steps: int = 6) -> list[dict[str, Any]]:
    """5 attempts per step with token changes of 0-12 % of the first, each step's
    attempts out of order and some of them twice."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for run in range(runs):
        for step in range(steps):
            attempts = [usage_attempt(f"messy-{run}", f"step-{step}", n, 1000 + 10 * rng.randint(0, 12) * (n > 1))
                        for n in range(1, 6)]  # fmt: skip
            rng.shuffle(attempts)
            attempts += rng.sample(attempts, 2)  # duplicates, later
            events += attempts
    return events


async def test_rescoring_a_messy_fleet_is_exact_and_the_same_every_run(
    endpoints: Endpoints, bucket: str, pg_schemas: Any
) -> None:
    """Several attempts per step, out of order, duplicates: the report and --apply hold
    exactly the published pairs whose verdict the new settings change, the same on every
    run; attempts the live consumer has not committed yet are not read."""
    (lane,) = await lanes(endpoints, bucket, pg_schemas, 1)
    events = messy_fleet(71)
    live = expected_for(events, lane)
    looser = lane.settings().model_copy(update={"tokens_tolerance": 0.055})
    rescored = demo.expected_comparisons(events, looser.compare_config())
    flipped = {i for i, verdict in live.items() if i in rescored and rescored[i] != verdict}
    assert flipped and len(flipped) < len(live)
    await lane.send(events)
    async with lane.pipeline() as pipeline:
        await processed(pipeline, len(events))
        assert once(await lane.outputs(want=len(live))) == live
    # more attempts that the live consumer never reads (it is stopped): beyond its position
    await lane.send([usage_attempt(f"messy-{r}", "step-0", 9, 5000) for r in range(3)])
    reports = [await rescore(lane.settings(), looser, ReplaySpec(), asyncio.Event(), apply=False, report_path=None)
               for _ in range(2)]  # fmt: skip
    for r in reports:
        r.pop("seconds")
    assert reports[0] == reports[1]
    steps = reports[0]["steps"]
    assert {comparison_id(s["run_id"], s["step_id"], s["baseline_attempt"], s["current_attempt"]) for s in steps} == (
        flipped
    )
    assert reports[0]["unpublished"] == 0 and reports[0]["records"] == len(events)
    summary = await rescore(lane.settings(), looser, ReplaySpec(), asyncio.Event(), apply=True, report_path=None)
    assert summary["state"] == "done" and summary["published"] == len(flipped)
    out = await lane.outputs(want=len(live) + len(flipped))
    assert {e["supersedes"] for e in out if e["supersedes"] is not None} == flipped
    assert len(once(out)) == len(live) + len(flipped)
    again = await rescore(lane.settings(), looser, ReplaySpec(), asyncio.Event(), apply=True, report_path=None)
    assert again["flipped"] == 0 and again["published"] == 0


async def abandoned_job(lane: Lane, events: list[dict[str, Any]]) -> str:
    """A backfill that committed its events and stopped before publishing any (as a
    process killed at that point leaves it): its outbox holds them, the history too."""
    s = lane.settings()
    described = ReplaySpec().describe("backfill", s)
    ranges = await resolve_ranges(s, ReplaySpec())
    async with open_store(s) as (_, jobs):
        job = await jobs.start("backfill", spec_hash(described), described, ranges)
    js = job_settings(s, job, None)
    pipeline = Pipeline(js, consumer=lambda st: RangeConsumer(reader(st), st.input_topic, job.ranges),
                        dead_letters=CountedDeadLetters(), publish=False)  # fmt: skip
    await asyncio.wait_for(pipeline.run(asyncio.Event()), 120)
    assert pipeline.checkpoint.processed == len(events)
    return job.job_id


def cli(lane: Lane, *args: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "replaywatch", "backfill", *args, "--json"],
                          env={**os.environ, **lane.env}, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout))


async def test_an_abandoned_backfill_is_listed_and_its_events_published_once(
    endpoints: Endpoints, bucket: str, pg_schemas: Any
) -> None:
    (lane,) = await lanes(endpoints, bucket, pg_schemas, 1)
    events = demo.synthetic_fleet(demo.FleetSpec(runs=10, steps=2, attempts=3, drift=0.3, seed=81))
    expected = expected_for(events, lane)
    await lane.send(events)
    job_id = await abandoned_job(lane, events)
    listed = cli(lane, "--list")
    assert [(j["job"], j["unpublished"]) for j in listed["jobs"]] == [(job_id, len(expected))]
    assert len(await lane.outputs(want=1, timeout=3)) == 0  # committed, said nowhere yet
    published = cli(lane, "--publish-job", job_id)
    assert published["state"] == "abandoned" and published["published"] == len(expected)
    assert once(await lane.outputs(want=len(expected))) == expected
    assert cli(lane, "--list")["jobs"] == []
    again = await run_backfill(lane)  # a new backfill of the range: all of it said already
    assert again["published"] == 0
    assert len(once(await lane.outputs(want=len(expected) + 1, timeout=3))) == len(expected)
