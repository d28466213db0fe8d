"""[registry] A real schema registry (Apicurio, Confluent-compatible API): producers no
one here wrote (confluent-kafka's AvroSerializer) under an evolved writer schema next to
v1, and consumers no one here wrote (its AvroDeserializer) reading the output."""

from __future__ import annotations

import json
import struct
import uuid
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.serialization import MessageField, SerializationContext

from replaywatch.stream.schema_registry import SchemaRegistry
from tests.conftest import Endpoints
from tests.integration.streaming import Lane
from tests.registry_clients import client, deserializer, serializer

pytestmark = pytest.mark.integration

NOW = 1_790_000_000_000
V1 = (Path(__file__).resolve().parents[2] / "schemas" / "step_attempt.avsc").read_text()


def evolved() -> str:
    """v1 plus one field with a default: what a producer adds without asking anyone."""
    doc = json.loads(V1)
    doc["fields"].append({"name": "region", "type": ["null", "string"], "default": None})
    return json.dumps(doc)


def incompatible() -> str:
    """The attempt number as a string: no reader of v1 can resolve it."""
    doc = json.loads(V1)
    for f in doc["fields"]:
        if f["name"] == "attempt":
            f["type"] = "string"
    return json.dumps(doc)


def attempt(run: str, step: str, n: int, snapshot: Any, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()), "run_id": run, "step_id": step, "attempt": n, "status": "succeeded",
        "occurred_at": NOW + n, "output_snapshot": orjson.dumps(snapshot).decode(), **extra,
    }  # fmt: skip


@pytest.fixture
def lane(endpoints: Endpoints, pg_schema: str, bucket: str) -> Lane:
    assert endpoints.schema_registry_url, "the devstack's env names REPLAYWATCH_SCHEMA_REGISTRY_URL"
    return Lane(endpoints, pg_schema, bucket, registry=True, extra={"tokens_tolerance": 0.01})


async def test_evolved_producers_and_standard_consumers(lane: Lane) -> None:
    s = lane.settings()
    registry = client(lane.endpoints.schema_registry_url)
    ctx = SerializationContext(s.input_topic, MessageField.VALUE)
    as_v1 = serializer(registry, V1)
    as_v2 = serializer(registry, evolved())
    runs = 12
    values: list[Any] = []
    for r in range(runs):
        run = f"run-{lane.tag}-{r}"
        # attempt 1 by an old producer (v1), attempt 2 by an upgraded one (v2); step b drifts
        values.append(as_v1(attempt(run, "a", 1, {"answer": 42, "tokens": 100}), ctx))
        values.append(as_v2(attempt(run, "a", 2, {"answer": 42, "tokens": 100}, region="eu-west-1"), ctx))
        values.append(as_v2(attempt(run, "b", 1, {"answer": 1, "tokens": 100}, region="eu-west-1"), ctx))
        values.append(as_v1(attempt(run, "b", 2, {"answer": 2, "tokens": 150}), ctx))
    ids = {struct.unpack(">bI", v[:5])[1] for v in values}
    assert len(ids) == 2, "v1 and v2 under two ids"
    assert registry.get_latest_version(f"{s.input_topic}-value").version == 2  # BACKWARD accepted v2
    # two records no reader can take: an incompatible writer schema, and an id nobody gave
    bad_id = registry.register_schema(f"other-{lane.tag}-value", Schema(incompatible(), "AVRO"))
    incompatible_value = struct.pack(">bI", 0, bad_id) + values[0][5:]
    unknown_value = struct.pack(">bI", 0, 987_654_321) + values[0][5:]

    await lane.create_topics()
    await lane.send([*values, incompatible_value, unknown_value], key=b"one-partition")
    async with lane.pipeline() as pipeline:
        raw = await lane.read(s.output_topic, want=2 * runs)
        dead = await lane.read(s.dlq_topic, want=2)
        fetches = cast(SchemaRegistry, pipeline.preparer.schemas).fetches if pipeline.preparer.schemas else -1

    # the output: Confluent-framed under <topic>-value, read by the standard deserializer
    out_id = registry.get_latest_version(f"{s.output_topic}-value").schema_id
    assert {m.value[:5] for m in raw} == {struct.pack(">bI", 0, out_id)}
    read = deserializer(registry)
    events: list[Any] = [read(m.value, SerializationContext(s.output_topic, MessageField.VALUE)) for m in raw]
    assert len(events) == 2 * runs
    verdicts = {(e["run_id"], e["step_id"]): (e["verdict"], e["token_delta"]) for e in events}
    assert verdicts == {
        **{(f"run-{lane.tag}-{r}", "a"): ("within_tolerance", 0.0) for r in range(runs)},
        **{(f"run-{lane.tag}-{r}", "b"): ("drift", 50.0) for r in range(runs)},
    }
    # the two it could not read: dead-lettered with their reasons, their bytes kept
    reasons = {dict(m.headers)["replaywatch.reason"]: m.value for m in dead}
    assert reasons == {b"incompatible_schema": incompatible_value, b"unknown_schema_id": unknown_value}
    # one fetch per schema id, not per record: v1, v2, the incompatible one, the unknown one
    assert fetches == 4


def zero_byte_items() -> str:
    """v1 plus an array of nulls with a default: each item takes no byte, so a record of a
    few bytes can declare 2^62 of them."""
    doc = json.loads(V1)
    doc["fields"].append({"name": "pad", "type": {"type": "array", "items": "null"}, "default": []})
    return json.dumps(doc)


async def test_a_writer_schema_with_zero_byte_items_is_refused_and_its_bomb_never_read(lane: Lane) -> None:
    """The "zero-byte item" bomb: a record under such a schema whose array declares
    2^62 items (fastavro would skip them one by one, for years) is dead-lettered at once
    as incompatible_schema; the records around it are compared."""
    s = lane.settings()
    registry = client(lane.endpoints.schema_registry_url)
    bomb_id = registry.register_schema(f"bomb-{lane.tag}-value", Schema(zero_byte_items(), "AVRO"))
    ctx = SerializationContext(s.input_topic, MessageField.VALUE)
    as_v1 = serializer(registry, V1)
    run = f"run-{lane.tag}"
    good: list[Any] = [as_v1(attempt(run, "a", n, {"answer": n, "tokens": 100}), ctx) for n in (1, 2)]
    body = good[0][5:]  # a v1 body, then the array: one block of 2^62 items, and its end
    bomb = struct.pack(">bI", 0, bomb_id) + body + b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01\x00"
    await lane.create_topics()
    await lane.send([good[0], bomb, good[1]])
    proc = lane.spawn()
    try:
        await lane.committed_past(2, timeout=60)
        outputs = await lane.outputs(want=1, timeout=30)
        dead = await lane.read(s.dlq_topic, want=1, timeout=30)
    finally:
        proc.terminate()
        proc.wait(20)
    assert [(o["run_id"], o["verdict"]) for o in outputs] == [(run, "drift")]
    assert [dict(m.headers)["replaywatch.reason"] for m in dead] == [b"incompatible_schema"]
    assert b"zero bytes" in dict(dead[0].headers)["replaywatch.message"]
