"""The schema registry adapter (a fake client of the same interface) and the codec's
writer -> reader resolution."""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError

from replaywatch import codec
from replaywatch.exceptions import (
    ConfigError,
    IncompatibleSchema,
    ServiceRefused,
    TransientError,
    UndecodableRecord,
    UnknownSchemaId,
)
from replaywatch.stream.schema_registry import SchemaRegistry, framed_ids, http_client

V1 = json.loads(codec.schema_text(codec.ATTEMPT_SCHEMA))


def evolved(**field: Any) -> dict[str, Any]:
    doc = json.loads(json.dumps(V1))
    doc["fields"].append(field or {"name": "region", "type": ["null", "string"], "default": None})
    return doc


def changed(name: str, type_: Any) -> dict[str, Any]:
    doc = json.loads(json.dumps(V1))
    for f in doc["fields"]:
        if f["name"] == name:
            f["type"] = type_
    return doc


EVENT = {n: None for n in codec.JSON_FIELDS} | {
    "event_id": "5b1c2d3e-8f4a-4b6c-9d0e-7a1b2c3d4e5f", "run_id": "r", "step_id": "s", "attempt": 2,
    "status": "succeeded", "occurred_at": 1_790_000_000_000, "latency_ms": None, "provider": "openai",
    "provider_version": None, "output_snapshot": '{"tokens": 5}',
}  # fmt: skip


def framed(schema_id: int, schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    buf.write(struct.pack(">bI", 0, schema_id))
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), record)
    return buf.getvalue()


class FakeClient:
    """The two calls the adapter makes, answering from a dict; errors on demand."""

    def __init__(self, schemas: dict[int, Schema]) -> None:
        self.schemas = schemas
        self.calls: list[int] = []
        self.fail: Exception | None = None

    async def get_schema(self, schema_id: int) -> Schema:
        self.calls.append(schema_id)
        if self.fail is not None:
            raise self.fail
        if schema_id not in self.schemas:
            raise SchemaRegistryError(404, 40403, f"Schema {schema_id} not found.")
        return self.schemas[schema_id]

    async def register_schema(self, subject: str, schema: Schema) -> int:
        if self.fail is not None:
            raise self.fail
        return 77


def registry(**schemas: Any) -> tuple[SchemaRegistry, FakeClient]:
    client = FakeClient({int(k[1:]): v for k, v in schemas.items()})
    return SchemaRegistry(client, "http://registry.test"), client


async def test_one_fetch_per_id_however_many_records_carry_it() -> None:
    reg, client = registry(i1=Schema(json.dumps(V1), "AVRO"), i2=Schema(json.dumps(evolved()), "AVRO"))
    values = [framed(1, V1, EVENT), framed(2, evolved(), EVENT | {"region": "eu"})] * 50
    for _ in range(3):
        writers = await reg.writers(values)
        assert set(writers) == {1, 2}
    assert client.calls == [1, 2] and reg.fetches == 2
    decoded = [codec.decode_attempt(v, writers=writers) for v in values]
    assert {(a.run_id, a.number, a.provider) for a in decoded} == {("r", 2, "openai")}
    assert writers[1] is codec.load_schema(codec.ATTEMPT_SCHEMA)  # v1 itself: read without resolution


async def test_unknown_ids_are_remembered_for_a_while() -> None:
    reg, client = registry()
    writers = await reg.writers([framed(9, V1, EVENT)])
    with pytest.raises(UnknownSchemaId, match=r"schema id 9 is unknown to the registry at http://registry\.test"):
        codec.decode_attempt(framed(9, V1, EVENT), writers=writers)
    await reg.writers([framed(9, V1, EVENT)])
    assert client.calls == [9]


@pytest.mark.parametrize(
    ("schema", "record", "match"),
    [
        (changed("attempt", "string"), EVENT | {"attempt": "2"}, "does not resolve to StepAttemptEvent"),
        (changed("run_id", "long"), EVENT | {"run_id": 5}, "does not resolve to StepAttemptEvent"),
        (evolved(name="severity", type="string"), EVENT | {"severity": "high"}, None),  # unknown to the reader: skipped
        ({**V1, "fields": [f for f in V1["fields"] if f["name"] != "provider"]}, EVENT, None),  # missing: its default
    ],
)
async def test_writer_schemas_resolve_or_are_incompatible(
    schema: dict[str, Any], record: dict[str, Any], match: str | None
) -> None:
    reg, _ = registry(i3=Schema(json.dumps(schema), "AVRO"))
    value = framed(3, schema, {k: v for k, v in record.items() if k in {f["name"] for f in schema["fields"]}})
    writers = await reg.writers([value])
    if match is None:
        attempt = codec.decode_attempt(value, writers=writers)
        names = {f["name"] for f in schema["fields"]}
        assert attempt.number == 2 and attempt.provider == ("openai" if "provider" in names else None)
    else:
        with pytest.raises(IncompatibleSchema, match=match):
            codec.decode_attempt(value, writers=writers)


async def test_a_schema_that_is_not_avro_is_incompatible() -> None:
    reg, _ = registry(i4=Schema('{"type": "object"}', "JSON"))
    writers = await reg.writers([framed(4, V1, EVENT)])
    with pytest.raises(IncompatibleSchema, match="schema id 4 is a JSON schema, not Avro"):
        codec.decode_attempt(framed(4, V1, EVENT), writers=writers)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (SchemaRegistryError(503, 50003, "unavailable"), TransientError),
        (SchemaRegistryError(429, 42900, "slow down"), TransientError),
        (http_client.ConnectError("refused"), TransientError),
        (SchemaRegistryError(401, 40101, "unauthorized"), ServiceRefused),
        (SchemaRegistryError(400, 40000, "bad"), ConfigError),
    ],
)
async def test_outages_are_transient_and_refusals_stop(error: Exception, kind: type[Exception]) -> None:
    reg, client = registry(i1=Schema(json.dumps(V1), "AVRO"))
    client.fail = error
    with pytest.raises(kind) as caught:
        await reg.writers([framed(1, V1, EVENT)])
    if kind is ServiceRefused:
        assert "REPLAYWATCH_SCHEMA_REGISTRY_USER_INFO" in str(caught.value)
    client.fail = None
    assert set(await reg.writers([framed(1, V1, EVENT)])) == {1}  # nothing was remembered of the failure


async def test_the_output_schema_is_registered() -> None:
    reg, _ = registry()
    assert await reg.register_output("out") == 77


def test_framed_ids_are_read_from_the_header() -> None:
    assert framed_ids([b"\x00\x00\x00\x00\x4dx", b"\x02ab", None, b"\x00\x00"]) == {77}


def test_a_framed_output_event_decodes_and_fits_its_budget() -> None:
    from replaywatch.compare import Attempt, CompareConfig, compare_attempts

    c = compare_attempts(Attempt("r", "s", 1, {"attestation_ids": [f"a{i}" for i in range(500)]}),
                         Attempt("r", "s", 2, {}), CompareConfig())  # fmt: skip
    rec = codec.comparison_record(c, diff_uri=None, source=("t", 0, 1), occurred_at_ms=1, detected_at_ms=2)
    plain = codec.encode_comparison(rec)
    framed_event = codec.encode_comparison(rec, schema_id=5)
    assert framed_event == struct.pack(">bI", 0, 5) + plain
    assert codec.decode_comparison(framed_event) == codec.decode_comparison(plain)
    cut = codec.encode_comparison(rec, max_bytes=len(plain), schema_id=5)
    assert len(cut) <= len(plain) and codec.decode_comparison(cut)["attestations_truncated"]


def test_corrupt_bytes_under_a_good_schema_are_still_avro_decode_errors() -> None:
    with pytest.raises(UndecodableRecord):
        codec.decode_attempt(
            struct.pack(">bI", 0, 1) + b"\xff\xff\xff", writers={1: codec.load_schema("step_attempt.avsc")}
        )
