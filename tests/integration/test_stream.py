"""The streaming pipeline on the real stack: Kafka -> PostgreSQL -> S3 -> Kafka."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import signal
import struct
import uuid
from collections import Counter
from typing import Any

import asyncpg
import orjson
import pytest

from replaywatch import codec, demo
from replaywatch.compare import comparison_id
from replaywatch.store.artifacts import object_key
from tests.conftest import Endpoints, s3_client
from tests.integration.streaming import Lane, oracle_projection, stop_proc

pytestmark = pytest.mark.integration

NOW = 1_790_000_000_000


@pytest.fixture
def lane(endpoints: Endpoints, pg_schema: str, bucket: str) -> Lane:
    return Lane(endpoints, pg_schema, bucket)


def attempt(run: str, step: str, n: int, snapshot: Any, tools: Any = None) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()), "run_id": run, "step_id": step, "attempt": n, "status": "succeeded",
        "occurred_at": NOW + n, "output_snapshot": None if snapshot is None else orjson.dumps(snapshot).decode(),
        "tool_events": None if tools is None else orjson.dumps(tools).decode(),
    }  # fmt: skip


async def s3_object(lane: Lane, sha: str) -> tuple[bytes, dict[str, Any]]:
    async with s3_client(lane.endpoints) as s3:
        got = await s3.get_object(Bucket=lane.bucket, Key=object_key(sha))
        return await got["Body"].read(), {"ContentType": got["ContentType"], "Metadata": got["Metadata"]}


async def test_reference_scenarios_through_kafka(lane: Lane) -> None:
    lane.extra = {"tokens_tolerance": 0.01, "cost_tolerance": 0.01}
    run = f"run-{lane.tag}"
    tools_a = [{"kind": "tool.run", "payload": {"stdout": "hello"}, "trace": {"span_id": "abc"}}]
    tools_b = [{"kind": "tool.run", "payload": {"stdout": "goodbye"}, "trace": {"span_id": "def"}}]
    snap = {"status": "ok", "payload": {"message": "hi"}, "tokens": 600, "cost": 0.002}
    events = [
        attempt(run, "s1-identical", 1, snap), attempt(run, "s1-identical", 2, snap),
        attempt(run, "s2-within", 1, {"message": "Original output", "metrics": {"tokens": 100, "cost": 1.00}}),
        attempt(run, "s2-within", 2, {"message": "Original output", "metrics": {"tokens": 100.5, "cost": 1.009}}),
        attempt(run, "s3-attest", 1, {"status": "ok", "attestation_ids": ["att-old"]}),
        attempt(run, "s3-attest", 2, {"status": "ok", "attestation_ids": ["att-new"]}),
        attempt(run, "s4-tools", 1, {"status": "ok", "attestation_ids": ["same"]}, tools_a),
        attempt(run, "s4-tools", 2, {"status": "ok", "attestation_ids": ["same"]}, tools_b),
        attempt(run, "s5-nosnap", 1, None), attempt(run, "s5-nosnap", 2, None),
    ]  # fmt: skip
    await lane.create_topics()
    await lane.send(events)
    async with lane.pipeline():
        out = await lane.outputs(want=4)
    by_step = {e["step_id"]: e for e in out}
    assert sorted(by_step) == ["s1-identical", "s2-within", "s3-attest", "s4-tools"]
    assert len(out) == 4

    s1 = by_step["s1-identical"]
    assert s1["verdict"] == "within_tolerance" and s1["token_delta"] == 0 and s1["cost_delta"] == 0
    assert s1["diff_sha256"] is None and s1["diff_uri"] is None
    s2 = by_step["s2-within"]
    assert s2["verdict"] == "within_tolerance" and s2["token_delta"] == pytest.approx(0.5)
    assert s2["tolerance_tokens"] == 0.01 and s2["tolerance_cost"] == 0.01
    s3, s4 = by_step["s3-attest"], by_step["s4-tools"]
    assert s3["verdict"] == "attestation_divergence" and s3["diff_kind"] == "replay_attestation_diff"
    assert s3["missing_attestations"] == ["att-old"] and s3["unexpected_attestations"] == ["att-new"]
    assert s4["verdict"] == "tool_event_divergence" and s4["diff_kind"] == "replay_tool_diff"

    for ev in out:
        assert ev["event_id"] == comparison_id(run, ev["step_id"], 1, 2)
        assert ev["_headers"]["verdict"] == ev["verdict"].encode()
        assert ev["source_topic"] == lane.settings().input_topic
        assert ev["occurred_at"] == NOW + 2 and ev["detected_at"] >= ev["occurred_at"]
    for ev in (s3, s4):
        sha = ev["diff_sha256"]
        assert ev["diff_uri"] == f"s3://{lane.bucket}/sha256/{sha[:2]}/{sha[2:4]}/{sha}"
        body, head = await s3_object(lane, sha)
        assert hashlib.sha256(body).hexdigest() == sha
        assert head["ContentType"] == "application/json"
        assert head["Metadata"] == {"kind": ev["diff_kind"], "run-id": run, "step-id": ev["step_id"]}
    assert orjson.loads((await s3_object(lane, s4["diff_sha256"]))[0])["current"] == tools_b

    proj = await lane.projections()
    assert proj[(run, "s1-identical")] == (1, 2, 2, "within_tolerance")
    assert proj[(run, "s3-attest")] == (1, 2, 2, "attestation_divergence")
    assert proj[(run, "s5-nosnap")] == (None, None, 2, None)


async def test_duplicates_and_out_of_order_match_the_batch_oracle(lane: Lane) -> None:
    spec = demo.FleetSpec(runs=40, steps=3, attempts=4, duplicates=0.25, out_of_order=0.4, drift=0.2, seed=11)
    events = demo.synthetic_fleet(spec)
    config = lane.settings().compare_config()
    expected = demo.expected_comparisons(events, config)
    await lane.create_topics()
    await lane.send(events)
    async with lane.pipeline():
        out = await lane.outputs(want=len(expected))
    ids = [e["event_id"] for e in out]
    assert len(ids) == len(set(ids)), "duplicate event ids"
    assert {e["event_id"]: e["verdict"] for e in out} == expected
    assert await lane.projections() == oracle_projection(events, config)


async def test_records_larger_than_a_fetch_still_come_through(endpoints: Endpoints, pg_schema: str,
                                                               bucket: str) -> None:  # fmt: skip
    """The fetch limits bound memory, not records: the broker sends a record larger than
    either limit alone, and the partition goes on."""
    lane = Lane(endpoints, pg_schema, bucket, partitions=2,
                extra={"fetch_max_bytes": 64 * 1024, "fetch_partition_bytes": 64 * 1024})  # fmt: skip
    big = "x" * (200 * 1024)  # each record about three times either limit
    events = [attempt(f"big-{r}", "s", n, {"text": big, "n": r + (n == 2 and r % 2)}) for r in range(6) for n in (1, 2)]
    config = lane.settings().compare_config()
    expected = demo.expected_comparisons(events, config)
    assert sorted(expected.values()) == ["drift"] * 3 + ["within_tolerance"] * 3
    await lane.create_topics()
    await lane.send(events)
    async with lane.pipeline():
        out = await lane.outputs(want=len(expected))
    assert {e["event_id"]: e["verdict"] for e in out} == expected


async def test_the_group_offsets_in_kafka_follow_postgres_for_lag_tools(lane: Lane) -> None:
    """Kafka's group offsets are committed at most once a second while running (they
    are advisory), catch up with PostgreSQL's within seconds, and are exact on stop."""
    events = demo.synthetic_fleet(demo.FleetSpec(runs=30, steps=2, attempts=3, seed=5))
    expected = demo.expected_comparisons(events, lane.settings().compare_config())
    await lane.create_topics()
    await lane.send(events)
    ends = await lane.end_offsets()
    assert sum(ends.values()) == len(events)
    async with lane.pipeline() as p:
        await lane.outputs(want=len(expected))
        async with asyncio.timeout(10):
            while await lane.group_offsets() != ends:
                await asyncio.sleep(0.2)
        more = demo.synthetic_fleet(demo.FleetSpec(runs=10, steps=2, attempts=3, seed=6))
        await lane.send(more)
        ends = await lane.end_offsets()
        async with asyncio.timeout(30):
            while p.checkpoint.processed < len(events) + len(more):
                await asyncio.sleep(0.01)
    assert await lane.group_offsets() == ends  # the last offsets are committed on stop


async def test_two_consumers_share_the_partitions_and_one_leaves(lane: Lane) -> None:
    events = demo.synthetic_fleet(demo.FleetSpec(runs=80, steps=3, attempts=3, seed=21))
    first, second = events[: len(events) // 2], events[len(events) // 2 :]
    config = lane.settings().compare_config()
    expected = demo.expected_comparisons(events, config)
    expected_first = demo.expected_comparisons(first, config)
    await lane.create_topics()
    async with lane.pipeline() as a:
        async with lane.pipeline() as b:
            async with asyncio.timeout(60):
                while not (a.owned_partitions and b.owned_partitions):
                    await asyncio.sleep(0.1)
            assert a.owned_partitions | b.owned_partitions == set(range(lane.partitions))
            assert not a.owned_partitions & b.owned_partitions
            await lane.send(first)
            await lane.outputs(want=len(expected_first))
            assert a.checkpoint.processed > 0 and b.checkpoint.processed > 0, "both members should own partitions"
        # b has left the group; a takes over all partitions
        await lane.send(second)
        out = await lane.outputs(want=len(expected))
    ids = [e["event_id"] for e in out]
    assert len(ids) == len(set(ids)), "duplicate event ids"
    assert set(ids) == set(expected)
    assert await lane.projections() == oracle_projection(events, config)


async def test_a_fenced_write_resumes_every_partition_from_postgres(
    lane: Lane, caplog: pytest.LogCaptureFixture
) -> None:
    """The stored offsets move under the consumer (as when another member took the
    partitions over, or an operator reset them), so its next write is fenced: what it
    prepared and did not commit is thrown away, every partition resumes from the stored
    offsets, and the records read again change nothing and say nothing twice."""
    events = demo.synthetic_fleet(demo.FleetSpec(runs=120, steps=3, attempts=3, seed=41))
    first, second = events[: len(events) // 2], events[len(events) // 2 :]
    config = lane.settings().compare_config()
    expected = demo.expected_comparisons(events, config)
    s = lane.settings()
    await lane.create_topics()
    async with lane.pipeline() as p:
        await lane.send(first)
        await lane.outputs(want=len(demo.expected_comparisons(first, config)))
        async with asyncio.timeout(30):
            while p.checkpoint.processed < len(first):
                await asyncio.sleep(0.05)
        conn = await asyncpg.connect(lane.endpoints.postgres_dsn)
        try:
            moved = await conn.execute(
                f'UPDATE "{lane.schema}".consumer_offset SET next_offset = 0 WHERE group_id = $1', s.group_id
            )
        finally:
            await conn.close()
        assert moved != "UPDATE 0"
        with caplog.at_level(logging.WARNING, logger="replaywatch.pipeline"):
            await lane.send(second)
            out = await lane.outputs(want=len(expected))
            async with asyncio.timeout(30):
                while p.checkpoint.processed < len(events) + len(first):  # the first half is read twice
                    await asyncio.sleep(0.05)
    assert "resuming every partition from PostgreSQL" in caplog.text
    ids = [e["event_id"] for e in out]
    assert len(ids) == len(set(ids)), "duplicate event ids"
    assert {e["event_id"]: e["verdict"] for e in out} == expected
    assert await lane.projections() == oracle_projection(events, config)


async def test_restart_by_sigterm_and_sigkill_loses_and_duplicates_nothing(lane: Lane) -> None:
    events = demo.synthetic_fleet(demo.FleetSpec(runs=500, steps=3, attempts=3, seed=31, snapshot_bytes=600))
    config = lane.settings().compare_config()
    expected = demo.expected_comparisons(events, config)
    await lane.create_topics()

    async def feed() -> None:
        chunk = len(events) // 20
        for i in range(0, len(events), chunk):
            await lane.send(events[i : i + chunk])
            await asyncio.sleep(0.3)

    feeder = asyncio.create_task(feed())
    proc = lane.spawn()
    await lane.committed_past(0)  # stopped while it works, not before it starts
    code, took = stop_proc(proc, signal.SIGTERM)
    assert code == 0 and took < 10, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
    proc = lane.spawn()
    await lane.committed_past(await lane.stored_total())
    stop_proc(proc, signal.SIGKILL)
    proc = lane.spawn()
    await feeder
    try:
        out = await lane.outputs(want=len(expected), timeout=120)
    finally:
        code, took = stop_proc(proc, signal.SIGTERM)
    assert code == 0 and took < 10
    ids = Counter(e["event_id"] for e in out)
    assert [i for i, n in ids.items() if n > 1] == [], "a read_committed reader saw an id twice"
    assert set(ids) == set(expected)
    assert await lane.projections() == oracle_projection(events, config)


def _poison(good: dict[str, Any]) -> list[tuple[str, bytes]]:
    ok = codec.encode_attempt(good)
    rng = random.Random(5)
    return [
        ("avro_decode", bytes(rng.randrange(1, 256) for _ in range(40))),
        ("avro_decode", ok[: len(ok) // 2]),
        ("unknown_schema_id", struct.pack(">bI", 0, 999) + ok),
        ("invalid_json", codec.encode_attempt(good | {"output_snapshot": "{not json"})),
        ("invalid_json", codec.encode_attempt(good | {"tool_events": "[NaN]"})),
        ("contract", codec.encode_attempt(good | {"attempt": -3})),
        ("contract", codec.encode_attempt(good | {"event_id": "not-a-uuid"})),
    ]


async def test_poison_records_are_dead_lettered_and_the_rest_processed(lane: Lane) -> None:
    lane.partitions = 1
    events = demo.synthetic_fleet(demo.FleetSpec(runs=10, steps=2, attempts=3, seed=41))
    expected = demo.expected_comparisons(events, lane.settings().compare_config())
    poison = _poison(events[0])
    await lane.create_topics()
    half = len(events) // 2
    await lane.send(events[:half])
    await lane.send([p for _, p in poison])
    await lane.send(events[half:])
    await lane.send([codec.encode_attempt(events[0], schema_id=1)])  # Confluent framing, known id: fine
    async with lane.pipeline() as p:
        out = await lane.outputs(want=len(expected))
        dead = await lane.read(lane.settings().dlq_topic, want=len(poison))
        assert p.checkpoint.processed == len(events) + len(poison) + 1
    assert {e["event_id"] for e in out} == set(expected) and len(out) == len(expected)
    assert len(dead) == len(poison)
    for m, (reason, value) in zip(dead, poison, strict=True):
        h = dict(m.headers)
        assert m.value == value, "dead letters carry the record unchanged"
        assert h["replaywatch.reason"].decode() == reason
        assert h["replaywatch.source.topic"].decode() == lane.settings().input_topic
        assert int(h["replaywatch.source.offset"]) == half + poison.index((reason, value))
        assert h["replaywatch.message"]
    # every input offset was processed or dead-lettered: the stored offset is the end of the log
    import asyncpg

    conn = await asyncpg.connect(lane.endpoints.postgres_dsn)
    try:
        stored = await conn.fetchval(f'SELECT next_offset FROM "{lane.schema}".consumer_offset')
    finally:
        await conn.close()
    assert stored == len(events) + len(poison) + 1
    assert sum((await lane.end_offsets()).values()) == stored  # the end of the log: nothing left behind
