"""The outbox read after a restart, with events of 12 MB waiting (attestation lists
that changed whole): the publisher reads them a bounded number of bytes at a time, so
the restarted consumer's peak RSS stays bounded whatever the backlog. The figures go
to the fault report (``REPLAYWATCH_OUTBOX_REPORT``)."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from replaywatch.pipeline import Pipeline
from tests.conftest import Endpoints
from tests.faults.harness import expected_for, peak_rss_mb
from tests.integration.streaming import Lane, attempt_event, spawn_run, stop_proc

pytestmark = pytest.mark.faults

MB = 1024 * 1024
EVENTS = 16
RSS_BOUND_MB = 330
"""What the README documents for this backlog (16 events of 12 MB, 192 MB waiting; read whole, the
restarted consumer peaked at 392 MB; bounded, 228 MB)."""


def attested(run: str, n: int, tag: str) -> dict[str, Any]:
    ids = [f"att-{tag}-{i:07d}-{'x' * 24}" for i in range(6 * MB // 40)]  # ~6 MB of ids
    return attempt_event(run, "s", n, {"attestation_ids": ids, "tokens": 1})


async def test_the_outbox_read_after_a_restart_is_bounded_in_memory(
    endpoints: Endpoints, pg_schema: str, bucket: str
) -> None:
    lane = Lane(endpoints, pg_schema, bucket, partitions=1)
    lane.extra = {"max_attestation_bytes": 8 * MB}
    await lane.create_topics()
    events = [e for k in range(EVENTS) for e in (attested(f"big-{k}", 1, "a"), attested(f"big-{k}", 2, "b"))]
    expected = expected_for(events, lane)
    for i in range(0, len(events), 2):
        await lane.send(events[i : i + 2])
    # 1. committed and never published: what a consumer killed after its commits leaves
    pipeline = Pipeline(lane.settings(), publish=False)
    stop = asyncio.Event()
    task = asyncio.create_task(pipeline.run(stop))
    await lane.committed_past(len(events) - 1, timeout=180)
    stop.set()
    await task
    assert pipeline.checkpoint.compared == len(expected) == EVENTS
    # 2. a consumer starts: its publisher reads the backlog from the outbox
    proc = spawn_run({**os.environ, **lane.env})
    peak = 0.0
    try:
        async with asyncio.timeout(180):
            outputs: list[dict[str, Any]] = []
            reader = asyncio.create_task(lane.outputs(want=len(expected), timeout=170))
            while not reader.done():
                peak = max(peak, peak_rss_mb(proc.pid))
                await asyncio.sleep(0.05)
            outputs = reader.result()
        peak = max(peak, peak_rss_mb(proc.pid))
    finally:
        code, _ = stop_proc(proc)
    sizes = sorted({len(str(o["missing_attestations"])) // MB for o in outputs})
    report = "\n".join([
        "| figure | value |", "|---|---|",
        f"| events waiting in the outbox | {len(expected)} of about 12 MB ({sum(1 for _ in outputs)} published) |",
        f"| restarted consumer's peak RSS | {peak:.0f} MB |",
    ])  # fmt: skip
    print("\n" + report)
    Path(os.environ.get("REPLAYWATCH_OUTBOX_REPORT", "/tmp/replaywatch-outbox-report.md")).write_text(report + "\n")
    assert code == 0
    ids = Counter(o["event_id"] for o in outputs)
    assert set(ids) == set(expected) and set(ids.values()) == {1}
    assert sizes and not any(o["attestations_truncated"] for o in outputs)
    assert peak < RSS_BOUND_MB, f"peak RSS {peak:.0f} MB reading a backlog of {len(expected)} 12 MB events"
