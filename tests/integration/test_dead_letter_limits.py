"""A bad record whose key or headers alone are over the dead-letter topic's limit: it
is dead-lettered with its value left out, its key cut and its own headers left out,
the headers saying so, and its partition goes on (it used to be retried forever)."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from replaywatch import codec
from replaywatch.stream.deadletter import TRIMMED_KEY_BYTES
from replaywatch.stream.kafka_client import client_options
from tests.conftest import Endpoints
from tests.integration.streaming import Lane, attempt_event, stop_proc

pytestmark = pytest.mark.integration

DLQ_LIMIT = 64 * 1024


async def test_an_oversized_key_and_headers_are_trimmed_and_the_partition_goes_on(
    endpoints: Endpoints, pg_schema: str, bucket: str
) -> None:
    lane = Lane(endpoints, pg_schema, bucket, partitions=1)
    s = lane.settings()
    admin = AIOKafkaAdminClient(**client_options(s))
    await admin.start()
    try:
        big = {"max.message.bytes": str(4 * 1024 * 1024)}
        await admin.create_topics([
            NewTopic(s.input_topic, 1, 1, topic_configs=big), NewTopic(s.output_topic, 1, 1, topic_configs=big),
            NewTopic(s.dlq_topic, 1, 1, topic_configs={"max.message.bytes": str(DLQ_LIMIT)}),
        ])  # fmt: skip
    finally:
        await admin.close()
    key = b"k" * (3 * DLQ_LIMIT)
    headers = [(f"h{i}", b"v" * 1024) for i in range(3 * DLQ_LIMIT // 1024)]
    producer = AIOKafkaProducer(**client_options(s), max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        await producer.send_and_wait(s.input_topic, b"not avro at all", key=key, headers=headers)  # key alone too big
        await producer.send_and_wait(s.input_topic, b"not avro either", key=b"small", headers=headers)  # headers
        for n in (1, 2):
            event = attempt_event(f"{lane.tag}-after", "s", n, {"v": n})
            await producer.send_and_wait(s.input_topic, codec.encode_attempt(event), key=b"after")
    finally:
        await producer.stop()
    proc = lane.spawn()
    try:
        await lane.committed_past(3, timeout=90)  # offsets 0..3 all committed: nothing stalls
        outputs = await lane.outputs(want=1, timeout=30)
        dead = await lane.read(s.dlq_topic, want=2, timeout=30)
    finally:
        code, _ = stop_proc(proc)
    assert code == 0
    assert [(o["run_id"], o["verdict"]) for o in outputs] == [(f"{lane.tag}-after", "drift")]
    assert sorted(int(dict(m.headers)["replaywatch.source.offset"]) for m in dead) == [0, 1]
    for m in dead:
        got = dict(m.headers)
        assert m.value is None and got["replaywatch.reason"] == b"avro_decode"
        assert b"record headers left out" in got["replaywatch.value_omitted"]
        assert not any(k.startswith("h") for k in got)
    first = next(m for m in dead if dict(m.headers)["replaywatch.source.offset"] == b"0")
    assert first.key == key[:TRIMMED_KEY_BYTES]
