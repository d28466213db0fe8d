"""Adversarial inputs the contract accepts, through the real pipeline (Kafka,
PostgreSQL, S3) as a subprocess: nesting at 1,000 levels in snapshots and tool events,
ids of 1,024 characters in 1- to 4-byte UTF-8, 100,000 attestation ids, output events
over 1 MB, multi-megabyte strings, and a stream of 4 MB records.

The process stays up; every such record ends compared or dead-lettered with a reason;
every other record of the same batches gets its comparison; nothing is published
twice; the output topic keeps Kafka's default 1 MB limit, so the attestation events
are cut to fit and say so, while their diffs in S3 keep every id."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from replaywatch import codec, demo
from replaywatch.devstack import Stack
from replaywatch.store.artifacts import object_key
from tests.conftest import Endpoints, s3_client
from tests.faults.adversarial import build, interleave
from tests.faults.harness import FaultRun, expected_for
from tests.integration.streaming import Lane, oracle_projection

MB = 1024 * 1024
CACHE_MB = 128
RSS_BOUND_MB = 1500
"""What the README documents for a stream of 4 MB records with REPLAYWATCH_CACHE_MB=128
and REPLAYWATCH_INFLIGHT_MB=64 (the long suite measured 1,049 MB; the peak moves with
how fetches and batches line up): the cache, a few times the input in flight (records,
their parsed form, their fingerprints), aiokafka's fetched records (32 MB a fetch, or
one larger record) and the interpreter."""


async def create_topics(lane: Lane) -> None:
    """Input and dead letters take 16 MB records; the output topic keeps the broker's
    default max.message.bytes (about 1 MB), as a production topic would."""
    s = lane.settings()
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    await admin.start()
    try:
        big = {"max.message.bytes": str(16 * MB)}
        await admin.create_topics([
            NewTopic(s.input_topic, lane.partitions, 1, topic_configs=big),
            NewTopic(s.dlq_topic, lane.partitions, 1, topic_configs=big),
            NewTopic(s.output_topic, lane.partitions, 1),
        ])  # fmt: skip
    finally:
        await admin.close()


def four_mb_stream(n: int) -> list[dict[str, Any]]:
    """``n`` records of about 4 MB each: pairs of attempts of distinct steps."""
    out = []
    for i in range(n):
        text = orjson.dumps({"blob": chr(97 + i % 26) * (4 * MB - 64), "tokens": i % 2}).decode()
        out.append({"event_id": f"00000000-0000-4000-8000-{i:012d}", "run_id": "four-mb", "step_id": f"s{i // 2}",
                    "attempt": 1 + i % 2, "status": "succeeded", "occurred_at": 1_790_000_000_000,
                    "output_snapshot": text})  # fmt: skip
    return out


async def run_adversarial(
    *, scale: int, four_mb: int, endpoints: Endpoints, stack: Stack, schema: str, bucket: str
) -> None:
    lane = Lane(endpoints, schema, bucket, partitions=4)
    lane.extra = {"max_record_bytes": 8 * MB, "batch_max_mb": 16, "inflight_mb": 64, "cache_mb": CACHE_MB}
    adversarial = build(11, scale=scale)
    good = demo.synthetic_fleet(demo.FleetSpec(runs=60 * scale, steps=3, attempts=3, seed=12, snapshot_bytes=400))
    stream = four_mb_stream(four_mb)
    mixed = interleave(good, adversarial, 13) + stream
    accepted = [e for e in mixed if e not in [x for _, x in adversarial.refused]]
    expected = expected_for(accepted, lane)
    await create_topics(lane)
    run = FaultRun(lane, stack, mixed, seed=14)
    stop = asyncio.Event()
    run.spawn()
    assert run.proc is not None
    first_pid = run.proc.pid
    sampler = asyncio.create_task(run.sample(stop))
    reader = asyncio.create_task(run.read_outputs(stop))
    watcher = asyncio.create_task(run.watch_rss(stop))
    try:
        await run.feed(chunks=10 * scale, pause=0.1)
        await run.wait_done(set(expected), len(mixed), timeout=300)
        code = await asyncio.to_thread(run.stop)
    finally:
        stop.set()
        await asyncio.gather(sampler, reader, watcher, return_exceptions=True)
    dead = await lane.read(lane.settings().dlq_topic, want=len(adversarial.refused), timeout=30)
    reasons = Counter(dict(m.headers)["replaywatch.reason"].decode() for m in dead)
    outputs = await lane.outputs(want=len(expected), timeout=60)
    attest = [o for o in outputs if o["run_id"] in adversarial.attestation_runs]
    got = run.progress.outputs
    rss = run.peak_rss_mb
    report = "\n".join([
        "| figure | value |", "|---|---|",
        f"| records in | {len(mixed)} (adversarial accepted {len(adversarial.accepted)}, over a limit "
        f"{len(adversarial.refused)}, 4 MB records {four_mb}) |",
        f"| comparisons out / expected | {len(got)} / {len(expected)} |",
        f"| lost | {len(set(expected) - set(got))} |",
        f"| duplicated ids | {sum(1 for v in got.values() if v > 1)} |",
        f"| dead-lettered (reasons) | {len(dead)} {dict(sorted(reasons.items()))} |",
        f"| attestation events: encoded bytes | {[len(codec.encode_comparison(a)) for a in attest]} |",
        f"| crashes | {run.crashes} |",
        f"| consumer peak RSS | {rss:.0f} MB |",
    ])  # fmt: skip
    print("\n" + report)
    Path(os.environ.get("REPLAYWATCH_ADVERSARIAL_REPORT", "/tmp/replaywatch-adversarial-report.md")).write_text(
        report + "\n"
    )

    assert code == 0
    assert run.crashes == 0 and run.proc is not None and run.proc.pid == first_pid
    assert set(got) == set(expected), f"lost {len(set(expected) - set(got))}"
    assert all(n == 1 for n in got.values())
    assert reasons == Counter(r for r, _ in adversarial.refused)
    assert run.progress.processed == len(mixed)
    assert await lane.projections() == oracle_projection(accepted, lane.settings().compare_config())
    assert len(attest) == scale
    for event in attest:  # cut to fit the 1 MB topic, full counts, the diff keeps every id
        assert event["attestations_truncated"] and len(codec.encode_comparison(event)) < MB
        assert event["missing_attestations_count"] == event["unexpected_attestations_count"] == 50_000
        assert 0 < len(event["missing_attestations"]) < 50_000
        async with s3_client(endpoints) as s3:
            got_diff = await s3.get_object(Bucket=bucket, Key=object_key(event["diff_sha256"]))
            diff = orjson.loads(await got_diff["Body"].read())
        assert len(diff["missing"]) == len(diff["unexpected"]) == 50_000
    assert rss < RSS_BOUND_MB, f"peak RSS {rss:.0f} MB under 4 MB records"


@pytest.mark.faults
async def test_adversarial_inputs_short(endpoints: Endpoints, stack: Stack, pg_schema: str, bucket: str) -> None:
    await run_adversarial(scale=1, four_mb=16, endpoints=endpoints, stack=stack, schema=pg_schema, bucket=bucket)


@pytest.mark.slow_faults
async def test_adversarial_inputs_long(endpoints: Endpoints, stack: Stack, pg_schema: str, bucket: str) -> None:
    await run_adversarial(scale=4, four_mb=120, endpoints=endpoints, stack=stack, schema=pg_schema, bucket=bucket)
