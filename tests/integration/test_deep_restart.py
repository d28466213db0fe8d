"""A snapshot at the contract's 1,024 levels survives a restart of the consumer: its
step is read back from PostgreSQL (one level deeper as stored) and the next attempt
is compared, not dead-lettered."""

from __future__ import annotations

import pytest

from replaywatch.compare.canonical import MAX_DEPTH, compact_bytes
from tests.conftest import Endpoints
from tests.faults.adversarial import nested
from tests.integration.streaming import Lane, attempt_event, stop_proc

pytestmark = pytest.mark.integration


async def test_a_step_at_the_depth_limit_is_compared_after_a_restart(
    endpoints: Endpoints, pg_schema: str, bucket: str
) -> None:
    lane = Lane(endpoints, pg_schema, bucket, partitions=1)
    await lane.create_topics()
    first, second = (
        attempt_event(f"{lane.tag}-deep", "s", n, None)
        | {"output_snapshot": compact_bytes(nested(MAX_DEPTH, {"v": n})).decode()}
        for n in (1, 2)
    )
    proc = lane.spawn()
    try:
        await lane.send([first])
        await lane.committed_past(0, timeout=60)
    finally:
        code, _ = stop_proc(proc)
    assert code == 0
    proc = lane.spawn()  # a new process: the step comes from PostgreSQL, not from a cache
    try:
        await lane.send([second])
        await lane.committed_past(1, timeout=60)
        outputs = await lane.outputs(want=1, timeout=30)
        dead = await lane.read(lane.settings().dlq_topic, want=0, timeout=2)
    finally:
        code, _ = stop_proc(proc)
    assert code == 0 and dead == []
    assert [(o["baseline_attempt"], o["current_attempt"], o["verdict"]) for o in outputs] == [(1, 2, "drift")]
