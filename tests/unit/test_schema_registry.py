"""The schema registry adapter (a fake client of the same interface) and the codec's
writer -> reader resolution."""

from __future__ import annotations

import io
import json
import struct
from typing import Any, cast

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
from replaywatch.stream import schema_registry
from replaywatch.stream.schema_registry import SchemaRegistry, framed_ids

V1 = json.loads(codec.schema_text(codec.ATTEMPT_SCHEMA))


def evolved(**field: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(json.dumps(V1))
    doc["fields"].append(field or {"name": "region", "type": ["null", "string"], "default": None})
    return doc


def changed(name: str, type_: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(json.dumps(V1))
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
        self.registrations = 0
        self.fail_first: list[Exception] = []

    async def get_schema(self, schema_id: int) -> Schema:
        self.calls.append(schema_id)
        if self.fail is not None:
            raise self.fail
        if schema_id not in self.schemas:
            raise SchemaRegistryError(404, 40403, f"Schema {schema_id} not found.")
        return self.schemas[schema_id]

    async def register_schema(self, subject: str, schema: Schema) -> int:
        self.registrations += 1
        if self.fail_first:
            raise self.fail_first.pop(0)
        if self.fail is not None:
            raise self.fail
        return 77


def registry(**schemas: Any) -> tuple[SchemaRegistry, FakeClient]:
    client = FakeClient({int(k[1:]): v for k, v in schemas.items()})
    return SchemaRegistry(cast(Any, client), "http://registry.test"), client


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
        (schema_registry.http_client.ConnectError("refused"), TransientError),  # type: ignore[attr-defined]
        (SchemaRegistryError(401, 40101, "unauthorized"), ServiceRefused),
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


@pytest.mark.parametrize("status", [400, 410, 422])
async def test_a_4xx_about_one_id_dead_letters_its_records_and_the_others_go_on(status: int) -> None:
    reg, client = registry(i1=Schema(json.dumps(V1), "AVRO"))
    client.fail = SchemaRegistryError(status, status * 100, "no such thing")
    writers = await reg.writers([framed(6, V1, EVENT)])
    with pytest.raises(UnknownSchemaId, match=rf"answered {status} for schema id 6"):
        codec.decode_attempt(framed(6, V1, EVENT), writers=writers)
    client.fail = None
    assert set(await reg.writers([framed(1, V1, EVENT), framed(6, V1, EVENT)])) == {1, 6}
    assert client.calls == [6, 1]  # 6 is remembered for a while, not asked again at once


def unrouted() -> SchemaRegistryError:
    """What an HTTP server answers for a path it has no route for: no registry error code."""
    return SchemaRegistryError(404, -1, "Unknown Schema Registry Error: b'<html><body><h1>Resource not found</h1>'")


async def test_an_unrouted_404_on_a_fetch_is_transient_and_nothing_is_dead_lettered() -> None:
    reg, client = registry(i1=Schema(json.dumps(V1), "AVRO"))
    client.fail = unrouted()
    with pytest.raises(TransientError, match=r"answered 404 with no registry error .* schema id 1"):
        await reg.writers([framed(1, V1, EVENT)])
    client.fail = None
    assert set(await reg.writers([framed(1, V1, EVENT)])) == {1}  # asked again at once, not remembered
    assert client.calls == [1, 1]


async def test_a_registration_answered_by_an_unrouted_404_is_tried_again() -> None:
    reg, client = registry()
    reg.unrouted_wait = 0.0
    client.fail_first = [unrouted(), unrouted()]
    assert await reg.register_output("out") == 77
    assert client.registrations == 3


async def test_a_url_that_never_routes_to_a_registry_is_a_config_error() -> None:
    reg, client = registry()
    reg.unrouted_wait = 0.0
    client.fail = unrouted()
    with pytest.raises(ConfigError, match=r"does not name a Confluent-compatible API; set REPLAYWATCH_SCHEMA_REGISTRY"):
        await reg.register_output("out")
    assert client.registrations == schema_registry.UNROUTED_TRIES


async def test_a_registry_404_about_the_subject_is_not_asked_again() -> None:
    reg, client = registry()
    client.fail = SchemaRegistryError(404, 40401, "Subject 'out-value' not found.")
    with pytest.raises(ConfigError, match="answered 404 to register"):
        await reg.register_output("out")
    assert client.registrations == 1


ZERO_BYTE_ITEMS = [
    {"name": "pad", "type": {"type": "array", "items": "null"}, "default": []},
    {"name": "pad", "type": {"type": "array", "items": {"type": "record", "name": "E", "fields": []}}, "default": []},
    {"name": "pad", "type": {"type": "array", "items": {"type": "fixed", "name": "Z", "size": 0}}, "default": []},
    {"name": "pad", "type": ["null", {"type": "map", "values": {"type": "array", "items": {
        "type": "record", "name": "N", "fields": [{"name": "n", "type": "null"}]}}}], "default": None},
]  # fmt: skip


@pytest.mark.parametrize("field", ZERO_BYTE_ITEMS)
async def test_a_schema_with_zero_byte_items_is_refused(field: dict[str, Any]) -> None:
    schema = evolved(**field)
    reg, _ = registry(i8=Schema(json.dumps(schema), "AVRO"))
    # the bomb: one array block declaring 2^62 items, in a handful of bytes
    value = framed(8, V1, EVENT)[:-1] + b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01\x00"
    writers = await reg.writers([value])
    with pytest.raises(IncompatibleSchema, match="arrays whose items can take zero bytes"):
        codec.decode_attempt(value, writers=writers)


@pytest.mark.parametrize(
    "field",
    [
        {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
        {"name": "flags", "type": {"type": "array", "items": ["null", "boolean"]}, "default": []},
        {"name": "m", "type": {"type": "map", "values": "null"}, "default": {}},
        {"name": "r", "type": {"type": "array", "items": {"type": "record", "name": "R", "fields": [
            {"name": "a", "type": "null"}, {"name": "b", "type": "int"}]}}, "default": []},
    ],
)  # fmt: skip
def test_arrays_whose_items_take_a_byte_are_accepted(field: dict[str, Any]) -> None:
    assert codec.zero_byte_arrays(evolved(**field)) == []
    codec.parse_writer(evolved(**field))


def test_a_recursive_schema_is_walked_once() -> None:
    node = {"type": "record", "name": "Node", "fields": [
        {"name": "kids", "type": {"type": "array", "items": "Node"}},
        {"name": "gap", "type": {"type": "array", "items": "null"}},
    ]}  # fmt: skip
    assert codec.zero_byte_arrays(evolved(name="tree", type=["null", node], default=None)) == [".tree|1.gap"]


def test_the_registry_url_is_shown_without_its_user_and_password() -> None:
    from replaywatch.stream.schema_registry import redact_url

    reg = SchemaRegistry(cast(Any, FakeClient({})), "https://svc:s3cret@registry.test:8081/apis/ccompat/v7")
    assert reg.url == "https://***@registry.test:8081/apis/ccompat/v7"
    assert redact_url("http://registry.test") == "http://registry.test"
