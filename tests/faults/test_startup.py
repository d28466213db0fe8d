"""Start-up with services down: `replaywatch run` waits for Kafka and S3 (it used to
exit 1, a crash loop under Kubernetes) and consumes once they are back; SIGTERM at any
moment of a start with PostgreSQL down exits 0, with one line and no traceback."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from replaywatch import demo
from replaywatch.devstack import Stack
from tests.conftest import Endpoints
from tests.faults.harness import expected_for
from tests.faults.test_readiness import free_port, probe, until
from tests.integration.streaming import Lane, spawn_run, stop_proc

pytestmark = pytest.mark.faults


async def test_kafka_and_s3_down_at_start_are_waited_for(
    endpoints: Endpoints, stack: Stack, pg_schema: str, bucket: str
) -> None:
    lane = Lane(endpoints, pg_schema, bucket)
    await lane.create_topics()
    events = demo.synthetic_fleet(demo.FleetSpec(runs=15, steps=2, attempts=2, drift=0.3, seed=51))
    port = free_port()
    log_path = f"/tmp/replaywatch-startup-{lane.tag}.log"
    await asyncio.to_thread(stack.stop, "kafka", "s3")
    try:
        with open(log_path, "wb") as log:
            proc = spawn_run({**os.environ, **lane.env, "REPLAYWATCH_HTTP_PORT": str(port)}, stderr=log)
        async with aiohttp.ClientSession() as http:
            # it waits, alive and saying so: /healthz answers, /readyz does not
            await until(http, f"http://127.0.0.1:{port}/healthz", 200, 60)
            async with asyncio.timeout(60):
                while "retrying" not in Path(log_path).read_text():
                    await asyncio.sleep(0.2)
            assert proc.poll() is None, Path(log_path).read_text()[-2000:]
            assert (await probe(http, f"http://127.0.0.1:{port}/readyz"))[0] != 200
    finally:
        await asyncio.to_thread(stack.start, "kafka", "s3")
    try:
        await lane.send(events)
        expected = expected_for(events, lane)
        await lane.committed_past(len(events) - 1, timeout=180)
        outputs = await lane.outputs(want=len(expected), timeout=60)
    finally:
        code, _ = stop_proc(proc)
    assert code == 0
    ids = Counter(o["event_id"] for o in outputs)
    assert set(ids) == set(expected) and set(ids.values()) == {1}


@pytest.mark.parametrize("after", [0.3, 2.5, 7.0])
async def test_sigterm_during_a_start_with_postgres_down_exits_0(
    endpoints: Endpoints, stack: Stack, pg_schema: str, bucket: str, after: float
) -> None:
    lane = Lane(endpoints, pg_schema, bucket)
    await asyncio.to_thread(stack.stop, "postgres")
    try:
        proc = spawn_run({**os.environ, **lane.env})
        await asyncio.sleep(after)  # the moment of the signal is the point: no readiness to wait for
        assert proc.poll() is None
        code, took = await asyncio.to_thread(stop_proc, proc, timeout=20)
        assert proc.stderr is not None
        err = proc.stderr.read().decode()
    finally:
        await asyncio.to_thread(stack.start, "postgres")
    assert code == 0, err[-2000:]
    assert took < 10
    assert "Traceback" not in err, err[-2000:]


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [("REPLAYWATCH_CREATE_TOPICS", "false", "do not exist"), ("REPLAYWATCH_S3_BUCKET", "b", "S3 answered 400")],
)
def test_a_refusal_at_start_stops_with_one_line(
    endpoints: Endpoints, pg_schema: str, bucket: str, setting: str, value: str, says: str
) -> None:
    """A refusal (a topic that does not exist and is not to be created; a bucket name S3
    refuses) still stops at once with exit 2 and one line: waiting is for what may pass."""
    env = {**os.environ, **Lane(endpoints, pg_schema, bucket).env, setting: value}
    done = subprocess.run([sys.executable, "-m", "replaywatch", "run"], env=env, capture_output=True, timeout=120)
    err = done.stderr.decode()
    assert done.returncode == 2 and says in err and "Traceback" not in err, err[-2000:]
