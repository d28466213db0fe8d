"""Fuzzed records mixed into good traffic: the consumer never crashes, dead-letters each
bad record with its reason, processes the good ones, and its memory stays bounded."""

from __future__ import annotations

import asyncio
import os
import random
from collections import Counter
from pathlib import Path

import pytest

from replaywatch import demo
from replaywatch.devstack import Stack
from tests.conftest import Endpoints
from tests.faults.fuzz import bad_records, odd_but_valid
from tests.faults.harness import FaultRun, expected_for
from tests.integration.streaming import Lane


async def run_fuzz(n_bad: int, huge: int, endpoints: Endpoints, stack: Stack, schema: str, bucket: str) -> None:
    lane = Lane(endpoints, schema, bucket, partitions=4)
    events = demo.synthetic_fleet(demo.FleetSpec(runs=150, steps=3, attempts=3, seed=77))
    odd = odd_but_valid(77, huge=huge)
    mixed = list(events)
    rng = random.Random(77)
    for ev in odd:  # keep each odd run's attempts in order, spread through the stream
        mixed.insert(
            rng.randrange(len(mixed) + 1) if ev["attempt"] == 1 or "unicode" in ev["run_id"] else len(mixed), ev
        )
    bad = bad_records(n_bad, 78)
    await lane.create_topics()
    run = FaultRun(lane, stack, mixed, seed=79)
    expected = expected_for(mixed, lane)
    stop = asyncio.Event()
    run.spawn()
    assert run.proc is not None
    sampler = asyncio.create_task(run.sample(stop))
    reader = asyncio.create_task(run.read_outputs(stop))
    watcher = asyncio.create_task(run.watch_rss(stop))
    try:
        await run.feed(chunks=20, pause=0.2, bad=[v for _, v in bad])
        total_in = len(mixed) + len(bad)
        await run.wait_done(set(expected), total_in, timeout=240)
        code = await asyncio.to_thread(run.stop)
    finally:
        stop.set()
        await asyncio.gather(sampler, reader, watcher, return_exceptions=True)
    rss_seen = run.peak_rss_mb
    dead = await lane.read(lane.settings().dlq_topic, want=len(bad), timeout=60)
    reasons = Counter(dict(m.headers)["replaywatch.reason"].decode() for m in dead)
    want_reasons = Counter(r for r, _ in bad)
    got = run.progress.outputs
    report = "\n".join([
        "| figure | value |", "|---|---|",
        f"| good events in | {len(mixed)} (of which odd but valid: {len(odd)}, 10 MB snapshots: {2 * huge}) |",
        f"| fuzzed records in | {len(bad)} |",
        f"| comparisons out / expected | {len(got)} / {len(expected)} |",
        f"| lost | {len(set(expected) - set(got))} |",
        f"| duplicated ids | {sum(1 for v in got.values() if v > 1)} |",
        f"| dead-lettered | {len(dead)} |",
        f"| reasons | {dict(sorted(reasons.items()))} |",
        f"| crashes | {run.crashes} |",
        f"| consumer peak RSS | {rss_seen:.0f} MB |",
    ])  # fmt: skip
    print("\n" + report)
    Path(os.environ.get("REPLAYWATCH_FUZZ_REPORT", "/tmp/replaywatch-fuzz-report.md")).write_text(report + "\n")

    assert code == 0
    assert run.crashes == 0
    assert set(got) == set(expected) and all(v == 1 for v in got.values())
    assert len(dead) == len(bad)
    assert reasons == want_reasons
    assert {m.value for m in dead} == {v for _, v in bad}
    assert run.progress.processed == total_in
    assert rss_seen < 1500, f"peak RSS {rss_seen:.0f} MB"


@pytest.mark.faults
async def test_fuzzed_input_short(endpoints: Endpoints, stack: Stack, pg_schema: str, bucket: str) -> None:
    await run_fuzz(1300, 1, endpoints, stack, pg_schema, bucket)


@pytest.mark.slow_faults
async def test_fuzzed_input_long(endpoints: Endpoints, stack: Stack, pg_schema: str, bucket: str) -> None:
    await run_fuzz(10_000, 3, endpoints, stack, pg_schema, bucket)
