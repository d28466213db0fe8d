"""Crashes, broker and database restarts, S3 outages and slowness, mid-stream.

`make test` runs a short version (``faults``); `make test-faults` the long one
(``slow_faults``: 50,000 events, 20+ SIGKILLs, S3 stopped for 20 s). Both print a
report table and assert: nothing lost, no id twice for a read_committed reader, the
projections equal the oracle, no diff missing from S3, no crash, recovery within 15 s
after a broker or database restart.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest

from replaywatch import demo
from replaywatch.devstack import Stack
from tests.conftest import Endpoints
from tests.faults.harness import FaultRun, expected_for
from tests.faults.proxy import SlowProxy
from tests.integration.streaming import Lane


@dataclass
class Plan:
    runs: int
    kills: int
    s3_pause: float
    seconds: float  # how long the feed lasts
    recovery_limit: float = 15.0  # the goal, after a broker or database restart
    seed: int = 1234


async def run_plan(plan: Plan, endpoints: Endpoints, stack: Stack, pg_schema: str, bucket: str) -> None:
    lane = Lane(endpoints, pg_schema, bucket, partitions=8)
    events = demo.synthetic_fleet(demo.FleetSpec(runs=plan.runs, steps=3, attempts=3, seed=plan.seed,
                                                 snapshot_bytes=500))  # fmt: skip
    expected = expected_for(events, lane)
    await lane.create_topics()
    s3 = urlparse(endpoints.s3_endpoint)
    proxy = SlowProxy(s3.hostname or "127.0.0.1", s3.port or 80)
    run = FaultRun(lane, stack, events, seed=plan.seed,
                   extra_env={"REPLAYWATCH_S3_ENDPOINT": f"http://127.0.0.1:{proxy.port}"})  # fmt: skip
    stop = asyncio.Event()
    run.spawn()
    sampler = asyncio.create_task(run.sample(stop))
    reader = asyncio.create_task(run.read_outputs(stop))
    feeder = asyncio.create_task(run.feed(chunks=60, pause=plan.seconds / 60))

    rng = run.rng
    restarts = [(rng.uniform(0.2, 0.4) * plan.seconds, "restart Kafka"),
                (rng.uniform(0.5, 0.7) * plan.seconds, "restart PostgreSQL")]  # fmt: skip

    window = 30.0 if plan.seconds >= 60 else 4.0

    def quiet(t: float) -> bool:
        # No SIGKILL from just before a service restart until a while after it: the
        # recovery measured after a restart is then the restart's, not kill churn's.
        return all(not (at - 1 <= t <= at + window) for at, _ in restarts)

    kills: list[float] = []
    while len(kills) < plan.kills:
        t = rng.uniform(0.05, 0.95) * plan.seconds
        if quiet(t):
            kills.append(t)
    schedule: list[tuple[float, str]] = [(t, "SIGKILL consumer") for t in kills]
    schedule += restarts
    schedule += [(rng.uniform(0.75, 0.85) * plan.seconds, f"stop S3 {plan.s3_pause:.0f}s"),
                 (rng.uniform(0.1, 0.2) * plan.seconds, "slow S3 (200 ms per chunk, 5 s)")]  # fmt: skip
    schedule.sort()

    async def slow_s3() -> None:
        proxy.delay = 0.2
        await asyncio.sleep(5)
        proxy.delay = 0.0

    actions = {
        "restart Kafka": lambda: run.restart_service("kafka"),
        "restart PostgreSQL": lambda: run.restart_service("postgres"),
        "slow S3 (200 ms per chunk, 5 s)": slow_s3,
    }
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        for at, name in schedule:
            await asyncio.sleep(max(0.0, start + at - loop.time()))
            if name == "SIGKILL consumer":
                await run.fault(name, run.kill)
            elif name.startswith("stop S3"):
                await run.fault(name, lambda: run.stop_s3(plan.s3_pause))
            else:
                await run.fault(name, actions[name])
        await feeder
        total_in = len(events)
        await run.wait_done(set(expected), total_in, timeout=max(180.0, plan.seconds * 2))
        code = await asyncio.to_thread(run.stop)
    finally:
        stop.set()
        await asyncio.gather(sampler, reader, return_exceptions=True)
        proxy.close()
    result = await run.verdict(expected, total_in)
    report = run.table(result)
    print("\n" + report)
    out = Path(os.environ.get("REPLAYWATCH_FAULT_REPORT", "/tmp/replaywatch-fault-report.md"))
    out.write_text(report + "\n")

    assert code == 0, "the consumer did not stop cleanly on SIGTERM"
    assert result["crashes"] == 0
    assert result["lost"] == 0
    assert result["unexpected"] == 0
    assert result["duplicated ids"] == 0, "a read_committed reader saw an event id twice"
    assert result["processed offsets"] == total_in, "every input offset is processed"
    assert result["projections equal oracle"]
    assert result["diffs missing from S3"] == 0
    for f in run.faults:
        if f.name in ("restart Kafka", "restart PostgreSQL"):
            assert f.recovery_s is not None and f.recovery_s <= plan.recovery_limit, (
                f"{f.name}: recovery {f.recovery_s}"
            )


@pytest.mark.faults
async def test_faults_short(endpoints: Endpoints, stack: Stack, pg_schema: str, bucket: str) -> None:
    # a sanity bound here (CI machines vary); the 15 s goal is held by the long suite
    await run_plan(Plan(runs=600, kills=4, s3_pause=5, seconds=30, recovery_limit=30), endpoints, stack, pg_schema,
                   bucket)  # fmt: skip


@pytest.mark.slow_faults
async def test_faults_long(endpoints: Endpoints, stack: Stack, pg_schema: str, bucket: str) -> None:
    await run_plan(Plan(runs=5500, kills=22, s3_pause=20, seconds=150), endpoints, stack, pg_schema, bucket)


async def run_kill_burst(kills: int, endpoints: Endpoints, stack: Stack, pg_schema: str, bucket: str) -> float:
    """A burst of ``kills`` SIGKILLs 0.5-3 s apart while records keep coming; returns the
    seconds from the last kill until the consumer commits again. Nothing may be lost
    or published twice."""
    lane = Lane(endpoints, pg_schema, bucket, partitions=8)
    events = demo.synthetic_fleet(demo.FleetSpec(runs=400, steps=3, attempts=3, seed=21, snapshot_bytes=300))
    expected = expected_for(events, lane)
    await lane.create_topics()
    run = FaultRun(lane, stack, events, seed=22)
    stop = asyncio.Event()
    run.spawn()
    sampler = asyncio.create_task(run.sample(stop))
    reader = asyncio.create_task(run.read_outputs(stop))
    feeder = asyncio.create_task(run.feed(chunks=120, pause=0.4))  # ~50 s of traffic
    try:
        while run.progress.processed == 0:
            await asyncio.sleep(0.2)
        for n in range(kills):
            await run.fault("SIGKILL consumer (burst)", run.kill)
            if n < kills - 1:
                await asyncio.sleep(run.rng.uniform(0.5, 3.0))
        # the last kill: what PostgreSQL holds once the killed process is gone, then the
        # time until the new process commits past it
        killed_at = run.faults[-1].at
        before = await lane.stored_total()
        recovery: float | None = None
        while time.monotonic() - killed_at < 60:
            if await lane.stored_total() > before:
                recovery = time.monotonic() - killed_at
                break
            await asyncio.sleep(0.05)
        await feeder
        await run.wait_done(set(expected), len(events), timeout=180)
        code = await asyncio.to_thread(run.stop)
    finally:
        stop.set()
        await asyncio.gather(sampler, reader, return_exceptions=True)
    result = await run.verdict(expected, len(events))
    result["seconds from the last kill until the next commit"] = None if recovery is None else round(recovery, 2)
    report = run.table(result)
    print("\n" + report)
    out = Path(os.environ.get("REPLAYWATCH_BURST_REPORT", "/tmp/replaywatch-burst-report.md"))
    out.write_text(report + "\n")
    assert code == 0
    assert result["lost"] == 0 and result["duplicated ids"] == 0 and result["unexpected"] == 0
    assert result["processed offsets"] == len(events)
    assert result["projections equal oracle"]
    assert recovery is not None, "the consumer did not commit again after the burst"
    return recovery


@pytest.mark.faults
async def test_sigkill_burst_recovers_within_15s(
    endpoints: Endpoints, stack: Stack, pg_schema: str, bucket: str
) -> None:
    recovery = await run_kill_burst(10, endpoints, stack, pg_schema, bucket)
    assert recovery <= 15.0, f"{recovery:.1f}s from the last kill until the consumer committed again"


async def stop_everything_then_sigterm(down_for: float, endpoints: Endpoints, stack: Stack, pg_schema: str,
                                       bucket: str) -> tuple[int, float]:  # fmt: skip
    """Kafka, PostgreSQL and S3 stopped under a running consumer with work in
    flight; after ``down_for`` seconds, SIGTERM. Returns (exit code, seconds to exit)."""
    lane = Lane(endpoints, pg_schema, bucket, partitions=4)
    events = demo.synthetic_fleet(demo.FleetSpec(runs=60, steps=3, attempts=3, seed=23, snapshot_bytes=300))
    await lane.create_topics()
    run = FaultRun(lane, stack, events, seed=24)
    run.spawn()
    assert run.proc is not None
    await lane.send(events[:200])
    stopped: list[str] = []
    try:
        stop = asyncio.Event()
        sampler = asyncio.create_task(run.sample(stop))
        while run.progress.processed < 200:
            await asyncio.sleep(0.1)
        stop.set()
        await sampler
        await lane.send(events[200:])  # work in flight when everything goes
        for service in ("s3", "postgres", "kafka"):
            await asyncio.to_thread(stack.stop, service)
            stopped.append(service)
        await asyncio.sleep(down_for)
        t0 = time.monotonic()
        run.proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(run.proc.wait, 30)
        seconds = time.monotonic() - t0
        print(f"\nSIGTERM after {down_for:.0f}s without Kafka, PostgreSQL and S3: exit {code} in {seconds:.1f}s")
        return code, seconds
    finally:
        for service in ("s3", "postgres", "kafka"):
            if service in stopped:
                await asyncio.to_thread(stack.start, service)


@pytest.mark.parametrize(
    "down_for",
    [pytest.param(15.0, marks=pytest.mark.faults), pytest.param(40.0, marks=pytest.mark.slow_faults)],
)
async def test_sigterm_with_every_service_down_exits_0_within_10s(
    down_for: float, endpoints: Endpoints, stack: Stack, pg_schema: str, bucket: str
) -> None:
    code, seconds = await stop_everything_then_sigterm(down_for, endpoints, stack, pg_schema, bucket)
    assert code == 0, f"exit {code}"
    assert seconds <= 10.0, f"SIGTERM took {seconds:.1f}s"
