"""The publisher's progress group has no members, so Kafka expires its offsets after
``offsets.retention.minutes`` (a week by default). After an idle partition, its
offsets are deleted here as expiry would; the next start publishes nothing twice."""

from __future__ import annotations

import asyncio
from collections import Counter

import asyncpg
import pytest
from confluent_kafka.admin import AdminClient

from replaywatch import demo
from tests.conftest import Endpoints
from tests.faults.harness import expected_for
from tests.integration.streaming import Lane, stop_proc

pytestmark = pytest.mark.integration


async def outbox_rows(endpoints: Endpoints, schema: str) -> int:
    conn = await asyncpg.connect(endpoints.postgres_dsn)
    try:
        return int(await conn.fetchval(f'SELECT count(*) FROM "{schema}".outbox'))
    finally:
        await conn.close()


def delete_group(bootstrap: str, group: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.delete_consumer_groups([group], request_timeout=30).values():
        future.result()


async def test_an_expired_progress_group_after_an_idle_partition_publishes_nothing_twice(
    endpoints: Endpoints, pg_schema: str, bucket: str
) -> None:
    lane = Lane(endpoints, pg_schema, bucket, partitions=2)
    await lane.create_topics()
    first = demo.synthetic_fleet(demo.FleetSpec(runs=12, steps=2, attempts=3, drift=0.3, seed=61))
    later = demo.synthetic_fleet(demo.FleetSpec(runs=12, steps=2, attempts=3, drift=0.3, seed=62))
    later = [e | {"run_id": "later-" + e["run_id"]} for e in later]
    proc = lane.spawn()
    try:
        await lane.send(first)
        await lane.committed_past(len(first) - 1, timeout=90)
        await lane.outputs(want=len(expected_for(first, lane)), timeout=60)
        async with asyncio.timeout(30):  # the lanes go idle and prune what they published
            while await outbox_rows(endpoints, pg_schema):
                await asyncio.sleep(0.2)
    finally:
        code, _ = stop_proc(proc)
    assert code == 0
    await asyncio.to_thread(delete_group, endpoints.kafka_bootstrap, lane.settings().publisher_group)
    proc = lane.spawn()
    try:
        await lane.send(later)
        await lane.committed_past(len(first) + len(later) - 1, timeout=90)
        expected = expected_for(first, lane) | expected_for(later, lane)
        outputs = await lane.outputs(want=len(expected), timeout=60)
    finally:
        code, _ = stop_proc(proc)
    assert code == 0
    ids = Counter(o["event_id"] for o in outputs)
    assert {i: n for i, n in ids.items() if n > 1} == {}
    assert set(ids) == set(expected)
