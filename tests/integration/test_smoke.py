"""The real services answer as replaywatch needs: Kafka (groups, transactions),
PostgreSQL and S3."""

from __future__ import annotations

import asyncio
import hashlib

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from tests.conftest import Endpoints, s3_client

pytestmark = pytest.mark.integration


async def drain(consumer: AIOKafkaConsumer, want: int, timeout: float = 20) -> list[bytes]:
    got: list[bytes] = []
    async with asyncio.timeout(timeout):
        while len(got) < want:
            batch = await consumer.getmany(timeout_ms=500)
            got += [m.value for msgs in batch.values() for m in msgs]
    return got


async def test_consumer_group_commits_an_offset(endpoints: Endpoints, new_topic, unique: str) -> None:  # type: ignore[no-untyped-def]
    topic = await new_topic("group")
    producer = AIOKafkaProducer(bootstrap_servers=endpoints.kafka_bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        for i in range(3):
            await producer.send_and_wait(topic, f"m{i}".encode(), key=b"k")
    finally:
        await producer.stop()

    def member() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(topic, bootstrap_servers=endpoints.kafka_bootstrap, group_id=f"g-{unique}",
                                enable_auto_commit=False, auto_offset_reset="earliest")  # fmt: skip

    consumer = member()
    await consumer.start()
    try:
        assert await drain(consumer, 3) == [b"m0", b"m1", b"m2"]
        await consumer.commit()
        assert await consumer.committed(TopicPartition(topic, 0)) == 3
    finally:
        await consumer.stop()

    # a new member of the group starts after the committed offset
    again = member()
    await again.start()
    try:
        await asyncio.sleep(0)  # joins the group on the first fetch
        batch = await again.getmany(timeout_ms=3000)
        assert sum(len(v) for v in batch.values()) == 0
        assert await again.committed(TopicPartition(topic, 0)) == 3
    finally:
        await again.stop()


async def test_read_committed_sees_committed_not_aborted(endpoints: Endpoints, new_topic, unique: str) -> None:  # type: ignore[no-untyped-def]
    topic = await new_topic("tx")
    producer = AIOKafkaProducer(bootstrap_servers=endpoints.kafka_bootstrap, transactional_id=f"tx-{unique}")
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send(topic, b"committed-1", partition=0)
            await producer.send(topic, b"committed-2", partition=0)
        await producer.begin_transaction()
        await producer.send(topic, b"aborted", partition=0)
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send(topic, b"committed-3", partition=0)
    finally:
        await producer.stop()

    async def read(isolation: str, want: int) -> list[bytes]:
        c = AIOKafkaConsumer(
            bootstrap_servers=endpoints.kafka_bootstrap, isolation_level=isolation, enable_auto_commit=False
        )
        await c.start()
        try:
            tp = TopicPartition(topic, 0)
            c.assign([tp])
            await c.seek_to_beginning(tp)
            return await drain(c, want)
        finally:
            await c.stop()

    assert await read("read_committed", 3) == [b"committed-1", b"committed-2", b"committed-3"]
    # the aborted record is in the log: a read_uncommitted reader sees it
    assert b"aborted" in await read("read_uncommitted", 4)


async def test_asyncpg_round_trip(endpoints: Endpoints, pg_schema: str) -> None:
    conn = await asyncpg.connect(endpoints.postgres_dsn)
    try:
        async with conn.transaction():
            await conn.execute(f'CREATE TABLE "{pg_schema}".t (id int primary key, doc jsonb)')
            await conn.execute(f'INSERT INTO "{pg_schema}".t VALUES ($1, $2)', 1, '{"a": [1, 2]}')
        row = await conn.fetchrow(f"SELECT id, doc->'a'->>1 AS second FROM \"{pg_schema}\".t")
        assert row is not None and (row["id"], row["second"]) == (1, "2")
    finally:
        await conn.close()


async def test_s3_put_get_head(endpoints: Endpoints, bucket: str) -> None:
    body = b'{"diff":"example"}'
    sha = hashlib.sha256(body).hexdigest()
    key = f"sha256/{sha[:2]}/{sha[2:4]}/{sha}"
    async with s3_client(endpoints) as s3:
        await s3.put_object(
            Bucket=bucket, Key=key, Body=body, ContentType="application/json", Metadata={"kind": "replay_tool_diff"}
        )
        head = await s3.head_object(Bucket=bucket, Key=key)
        assert head["ContentLength"] == len(body)
        assert head["ContentType"] == "application/json"
        assert head["Metadata"] == {"kind": "replay_tool_diff"}
        got = await s3.get_object(Bucket=bucket, Key=key)
        assert await got["Body"].read() == body
