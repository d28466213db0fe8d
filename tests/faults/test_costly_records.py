"""Records that cost the most the contract allows, through `replaywatch run`: the pair
with a chain of 1,024 levels and 2,000 equal items beside each level (the structure
diff was quadratic in the depth), and one whose every item differs (a patch too large
to build within the budget). Each ends compared or dead-lettered as ``too_costly``
with its figure; /healthz answers all along; SIGTERM in the middle of one exits 0."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import aiohttp
import pytest

from replaywatch import demo
from replaywatch.compare.canonical import MAX_DEPTH, compact_bytes
from replaywatch.devstack import Stack
from tests.conftest import Endpoints
from tests.faults.harness import expected_for
from tests.faults.test_readiness import free_port, until
from tests.integration.streaming import Lane, attempt_event, stop_proc

pytestmark = pytest.mark.faults


def deep_and_wide(depth: int, width: int, leaf: Any, fill: int = 0) -> Any:
    value = leaf
    for _ in range(depth - 1):
        value = {"child": value, "items": [fill] * width}
    return value


def costly_pairs(tag: str) -> list[dict[str, Any]]:
    """Two steps: the deep-and-wide pair that differs at its leaf, and one whose
    2,000 items differ at every level (a 2-million-operation patch)."""
    pairs = [
        (f"{tag}-deep", 1, deep_and_wide(MAX_DEPTH, 2000, 1)),
        (f"{tag}-deep", 2, deep_and_wide(MAX_DEPTH, 2000, 2)),
        (f"{tag}-wide", 1, deep_and_wide(MAX_DEPTH, 2000, 1, fill=0)),
        (f"{tag}-wide", 2, deep_and_wide(MAX_DEPTH, 2000, 1, fill=7)),
    ]
    return [
        attempt_event(run, "s", n, None) | {"output_snapshot": compact_bytes(doc).decode()} for run, n, doc in pairs
    ]


PROBE_SECONDS = 5.0
"""A probe's timeout: the budget is CPU time, and on a busy 2-core machine a record's
0.5 s of CPU can take a few seconds of wall time (Kubernetes' own default is 1 s with
three failures in a row before a restart)."""


async def watch_health(http: aiohttp.ClientSession, url: str, stop: asyncio.Event, seen: list[int]) -> None:
    while not stop.is_set():
        try:
            async with http.get(url, timeout=aiohttp.ClientTimeout(total=PROBE_SECONDS)) as resp:
                seen.append(resp.status)
        except (aiohttp.ClientError, TimeoutError):
            seen.append(0)
        await asyncio.sleep(0.1)


async def test_costly_records_end_compared_or_dead_lettered_and_the_loop_stays_live(
    endpoints: Endpoints, stack: Stack, pg_schema: str, bucket: str
) -> None:
    lane = Lane(endpoints, pg_schema, bucket, partitions=2)
    await lane.create_topics()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = lane.spawn(REPLAYWATCH_HTTP_PORT=str(port), REPLAYWATCH_RECORD_CPU_SECONDS="0.5")
    normal = demo.synthetic_fleet(demo.FleetSpec(runs=20, steps=2, attempts=2, seed=31))
    costly = costly_pairs(lane.tag)  # built before the watch: building them holds this test's own loop
    again = costly_pairs(f"{lane.tag}-again")[2:]
    healthz: list[int] = []
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as http:
        await until(http, f"{base}/readyz", 200, 90)
        watcher = asyncio.create_task(watch_health(http, f"{base}/healthz", stop, healthz))
        try:
            await lane.send(normal[: len(normal) // 2] + costly + normal[len(normal) // 2 :])
            await lane.committed_past(len(normal) + len(costly) - 1, timeout=180)
        finally:
            stop.set()
            await watcher
        # a costly record again, and SIGTERM while it is being compared
        await lane.send(again)
        await asyncio.sleep(0)  # no readiness to wait for: the point is to stop mid-record
        code, took = await asyncio.to_thread(stop_proc, proc, timeout=30)
    assert code == 0 and took < 10, (code, took)
    assert healthz and set(healthz) == {200}, Counter(healthz)

    outputs = await lane.outputs(want=len(expected_for(normal, lane)), timeout=60)
    dead = await lane.read(lane.settings().dlq_topic, want=1, timeout=30)
    compared = {(o["run_id"], o["step_id"]) for o in outputs}
    dead_runs = {dict(m.headers)["replaywatch.source.offset"]: m for m in dead}
    # every normal pair compared; the wide pair dead-lettered with its figure; the deep
    # pair compared, or dead-lettered as too costly on a machine too slow for it
    assert {(e["run_id"], e["step_id"]) for e in normal} <= compared
    assert (f"{lane.tag}-wide", "s") not in compared
    assert dead_runs and {dict(m.headers)["replaywatch.reason"] for m in dead} == {b"too_costly"}
    assert all(b"s of CPU, over the budget of 0.5 s" in dict(m.headers)["replaywatch.message"] for m in dead)
    deep_said = (f"{lane.tag}-deep", "s") in compared
    assert deep_said or len(dead) >= 2, (deep_said, len(dead))
