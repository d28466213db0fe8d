"""Avro encode/decode of the contract in ``schemas/`` (fastavro).

Input values are Avro binary of ``StepAttemptEvent`` v1, or the Confluent wire format
(magic byte 0, a 4-byte big-endian schema id, then Avro binary) when the id is one the
registry in ``schemas/registry.json`` knows. A plain Avro value can't start with byte 0:
its first field is the event id, a non-empty string, whose length comes first.

Every way a record can break the contract raises a ``BadRecordError`` subclass whose
``reason`` is a short code for the dead-letter headers. Byte limits (``Limits``, from
settings) keep what one record can cost bounded: its size, its ids in UTF-8, its
attestation ids and its tool events.
"""

from __future__ import annotations

import io
import json
import math
import re
import struct
import uuid
from collections.abc import Mapping
from functools import cache
from importlib import resources
from typing import Any, Final, NamedTuple

import fastavro
from fastavro.read import SchemaResolutionError
from fastavro.schema import to_parsing_canonical_form

from replaywatch import native
from replaywatch.compare import ABSENT, Attempt, Comparison, parse_json
from replaywatch.compare.attestations import ATTESTATION_KEY
from replaywatch.envelope.cohort import kind_of
from replaywatch.exceptions import (
    BadRecordError,
    ContractViolation,
    IncompatibleSchema,
    InvalidJsonError,
    RecordTooLarge,
    UndecodableRecord,
    UnknownSchemaId,
)

__all__ = [
    "DEFAULT_LIMITS",
    "BadRecordError",
    "ContractViolation",
    "InvalidJsonError",
    "Limits",
    "UndecodableRecord",
    "UnknownSchemaId",
    "decode_attempt",
    "encode_attempt",
]


class Limits(NamedTuple):
    """Limits of one input record: bytes (settings ``REPLAYWATCH_MAX_*``) and CPU."""

    record_bytes: int = 16 * 1024 * 1024
    id_bytes: int = 4096
    """Each of run_id and step_id, in UTF-8 (1,024 characters of 4 bytes fit)."""
    attestation_bytes: int = 8 * 1024 * 1024
    """The attestation ids of an output snapshot, in UTF-8, all together."""
    tool_events_bytes: int = 4 * 1024 * 1024
    """The tool events' JSON text, in UTF-8."""
    cpu_seconds: float | None = None
    """CPU one record's comparison may use (``compare.budget``); None: unlimited."""
    kind_path: str | None = None
    """The ``spec_snapshot`` field naming the step's kind (``envelope.cohort``); None:
    the spec is not read."""


DEFAULT_LIMITS = Limits()


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _without_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_without_logical_types(v) for v in node]
    return node


@cache
def _schema_json(name: str) -> str:
    """A schema of ``schemas/`` as JSON text with its logical types as their raw types
    (what ``load_schema`` parses), for the native codec."""
    text = (resources.files("replaywatch.schemas") / name).read_text()
    return json.dumps(_without_logical_types(json.loads(text)))


@cache
def load_schema(name: str) -> Any:
    """A schema from ``schemas/``, read with its logical types as their raw types: the
    codec checks the uuid itself and keeps timestamps as epoch milliseconds, which is
    what it needs (and converting to datetime and back would cost per record)."""
    text = (resources.files("replaywatch.schemas") / name).read_text()
    return fastavro.parse_schema(_without_logical_types(json.loads(text)))


def schema_text(name: str) -> str:
    """A schema of ``schemas/`` as its JSON text (what is registered)."""
    return (resources.files("replaywatch.schemas") / name).read_text()


def parse_writer(schema: Any) -> Any:
    """A writer schema of StepAttemptEvent from a registry, parsed as the codec reads
    (logical types as their raw types), for fastavro's writer -> reader resolution; the
    reader schema itself when the two are the same (Parsing Canonical Form), so that v1
    records are read without resolution, as fast as plain ones.

    Raises IncompatibleSchema for a schema whose arrays can hold items of zero bytes
    (``zero_byte_arrays``)."""
    raw = _without_logical_types(schema)
    if unsafe := zero_byte_arrays(raw):
        raise IncompatibleSchema(
            f"the writer schema has arrays whose items can take zero bytes ({', '.join(unsafe[:5])}): a record "
            "of a few bytes could declare 2^62 of them, and reading it would never end; such schemas are refused"
        )
    if to_parsing_canonical_form(raw) == _reader_form():
        return load_schema(ATTEMPT_SCHEMA)
    return fastavro.parse_schema(raw)


_PRIMITIVE_SIZES: Final = {"null": 0, "boolean": 1, "int": 1, "long": 1, "float": 4, "double": 8,
                             "bytes": 1, "string": 1}  # fmt: skip
"""The fewest bytes a value of each primitive type takes in Avro binary."""


def zero_byte_arrays(schema: Any) -> list[str]:
    """The paths of the arrays in ``schema`` whose items can be encoded in zero bytes.

    Avro reads an array's item count first and then each item: with items of zero bytes
    (``null``, a ``fixed`` of size 0, a record of only such fields) a 70-byte record can
    declare 2^62 items, which a reader skips one by one, for years. Every other item
    takes at least one byte, so what a record can declare is bounded by its size (which
    ``Limits.record_bytes`` caps). A map's entries always hold a key, so maps are safe;
    a union writes its branch index, so unions are too.
    """
    named: dict[str, Any] = {}
    unsafe: list[str] = []

    def least(node: Any, path: str, seen: frozenset[str]) -> int:
        """The fewest bytes a value of ``node`` takes (recording unsafe arrays on the way)."""
        if isinstance(node, str):
            if node in _PRIMITIVE_SIZES:
                return _PRIMITIVE_SIZES[node]
            if node in seen:  # a recursive reference: through an array or a union, never empty
                return 1
            target = named.get(node) or named.get(node.rsplit(".", 1)[-1])
            return 1 if target is None else least(target, path, seen | {node})
        if isinstance(node, list):  # a union: its branch index comes first
            for n, branch in enumerate(node):
                least(branch, f"{path}|{n}", seen)
            return 1
        if not isinstance(node, dict):
            return 1
        kind = node.get("type")
        if isinstance(kind, (dict, list)) or (isinstance(kind, str) and kind not in _COMPLEX):
            return least(kind, path, seen)
        name = node.get("name")
        if isinstance(name, str) and kind in ("record", "error", "enum", "fixed"):
            named[name] = node
            named[name.rsplit(".", 1)[-1]] = node
            seen = seen | {name}
        if kind in ("record", "error"):
            total = 0
            for field_ in node.get("fields") or []:
                if isinstance(field_, dict):
                    total += least(field_.get("type"), f"{path}.{field_.get('name')}", seen)
            return total
        if kind == "fixed":
            size = node.get("size")
            return size if isinstance(size, int) else 1
        if kind == "array":
            if least(node.get("items"), f"{path}[]", seen) == 0:
                unsafe.append(path or "(the record)")
            return 1
        if kind == "map":
            least(node.get("values"), f"{path}{{}}", seen)
            return 1
        return 1  # enum: its index

    least(schema, "", frozenset())
    return unsafe


_COMPLEX: Final = frozenset({"record", "error", "enum", "array", "map", "fixed"})


@cache
def _reader_form() -> str:
    return str(to_parsing_canonical_form(_without_logical_types(json.loads(schema_text(ATTEMPT_SCHEMA)))))


@cache
def registry() -> dict[int, Any]:
    doc = json.loads((resources.files("replaywatch.schemas") / "registry.json").read_text())
    return {int(k): load_schema(v) for k, v in doc["ids"].items()}


ATTEMPT_SCHEMA = "step_attempt.avsc"
COMPARISON_SCHEMA = "replay_comparison.avsc"
JSON_FIELDS = (
    "spec_snapshot", "input_snapshot", "output_snapshot", "error_snapshot", "checkpoint",
    "budget_snapshot", "guardrail_events", "tool_events", "artifacts",
)  # fmt: skip
COMPARED_JSON_FIELDS = ("output_snapshot", "tool_events")
"""The JSON fields the comparison reads: the only ones parsed (and so validated). The
others are carried in the record and never read here."""
_HEADER = struct.Struct(">bI")
_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
MAX_ATTEMPT = 2**31 - 1
MAX_ID_LEN = 1024


def decode_attempt(
    value: bytes | None, limits: Limits = DEFAULT_LIMITS, writers: Mapping[int, Any] | None = None
) -> Attempt:
    """Decode and validate one input value. Raises BadRecordError on any breach.

    ``writers``: writer schemas by id from a schema registry (each a parsed schema, or
    the BadRecordError its records get); without one, ``schemas/registry.json``'s. A
    writer schema other than the reader is resolved against it (fastavro): fields it
    adds are skipped, fields it lacks take their defaults, and what cannot be resolved
    is an IncompatibleSchema.

    In two steps, which the pipeline takes apart (``read_attempt`` for a whole batch,
    then ``parse_attempt`` for one record at a time, just before it is compared)."""
    return parse_attempt(read_attempt(value, limits, writers), limits)


def read_attempt(
    value: bytes | None, limits: Limits = DEFAULT_LIMITS, writers: Mapping[int, Any] | None = None
) -> dict[str, Any]:
    """The first step of ``decode_attempt``: the Avro record, its ids checked (the step
    it belongs to is known and sound), its JSON fields still text."""
    if not value:
        raise UndecodableRecord("empty value: expected an Avro StepAttemptEvent")
    if len(value) > limits.record_bytes:
        raise RecordTooLarge(
            f"record of {len(value)} bytes is over the limit of {limits.record_bytes} bytes "
            "(REPLAYWATCH_MAX_RECORD_BYTES)"
        )
    reader = load_schema(ATTEMPT_SCHEMA)
    writer = reader
    start = 0
    if value[0] == 0:
        if len(value) < 5:
            raise UndecodableRecord("Confluent framing cut short: fewer than 5 bytes")
        _, schema_id = _HEADER.unpack_from(value)
        if writers is None:
            writer = registry().get(schema_id)
            if writer is None:
                raise UnknownSchemaId(f"Confluent schema id {schema_id} is unknown; known ids: {sorted(registry())}")
        else:
            writer = writers.get(schema_id)
            if writer is None:
                raise UnknownSchemaId(f"Confluent schema id {schema_id} is unknown")
            if isinstance(writer, BadRecordError):
                raise type(writer)(str(writer))
        start = 5
    rec = _read(value, start, writer, reader)
    _check_ids(rec, limits)
    return rec


def _read(value: bytes, start: int, writer: Any, reader: Any) -> dict[str, Any]:
    """The Avro record from ``start``: natively when the writer schema is the reader's
    and that path is on and takes the bytes, else (and for what it leaves, with the
    reference's errors) fastavro, which also resolves another writer schema."""
    if writer is reader and (fast := native.avro(_schema_json(ATTEMPT_SCHEMA))) is not None:
        try:
            rec, end = fast.decode(value, start)
        except native.Mismatch:
            pass
        else:
            if end != len(value):
                raise UndecodableRecord(f"{len(value) - end} trailing bytes after the Avro record")
            return rec
    buf = io.BytesIO(value)
    buf.seek(start)
    try:
        read: dict[str, Any] = fastavro.schemaless_reader(buf, writer, None if writer is reader else reader)  # type: ignore[assignment]
    except SchemaResolutionError as exc:
        raise IncompatibleSchema(f"the writer schema does not resolve to StepAttemptEvent: {exc}") from None
    except Exception as exc:  # fastavro raises many kinds on corrupt input
        raise UndecodableRecord(f"not a StepAttemptEvent in Avro binary: {type(exc).__name__}: {exc}") from None
    if buf.tell() != len(value):
        raise UndecodableRecord(f"{len(value) - buf.tell()} trailing bytes after the Avro record")
    return read


def _check_ids(rec: dict[str, Any], limits: Limits) -> None:
    if _CANONICAL_UUID.fullmatch(rec["event_id"]) is None:  # the usual form, else what uuid.UUID reads
        try:
            uuid.UUID(rec["event_id"])
        except ValueError:
            raise ContractViolation(f"event_id {rec['event_id']!r} is not a UUID") from None
    if not 0 <= rec["attempt"] <= MAX_ATTEMPT:
        raise ContractViolation(f"attempt {rec['attempt']} is out of range; attempts count from 0 to {MAX_ATTEMPT}")
    for name in ("run_id", "step_id"):
        value = rec[name]
        if not value or len(value) > MAX_ID_LEN or "\x00" in value:
            raise ContractViolation(
                f"{name} must be 1 to {MAX_ID_LEN} characters without NUL, got {len(value)} characters"
            )
        if (size := _utf8_len(value)) > limits.id_bytes:
            raise RecordTooLarge(
                f"{name} of {size} bytes in UTF-8 is over the limit of {limits.id_bytes} (REPLAYWATCH_MAX_ID_BYTES)"
            )


def parse_attempt(rec: dict[str, Any], limits: Limits = DEFAULT_LIMITS, documents: bool = False) -> Attempt:
    """The second step of ``decode_attempt``: the JSON fields the comparison reads,
    parsed and checked, and the Attempt. Raises BadRecordError on any breach.

    ``documents``: where the native path reads a JSON field, keep it as a
    ``native.Document`` rather than Python objects (``engine.prepare`` takes either, to
    the same attempt); a text it leaves is parsed here as ever, with the same errors."""
    tools_text = rec["tool_events"]
    if tools_text is not None and (size := _utf8_len(tools_text)) > limits.tool_events_bytes:
        raise RecordTooLarge(
            f"tool_events of {size} bytes is over the limit of {limits.tool_events_bytes} "
            "(REPLAYWATCH_MAX_TOOL_EVENTS_BYTES)"
        )
    parsed: dict[str, Any] = {}
    for name in COMPARED_JSON_FIELDS:
        text = rec[name]
        if text is not None:
            if documents and (doc := native.document(text)) is not None:
                parsed[name] = doc
                continue
            try:
                parsed[name] = parse_json(text)
            except BadRecordError as exc:
                raise type(exc)(f"{name}: {exc}") from None
    snapshot = parsed.get("output_snapshot")
    size = 0
    if native.is_document(snapshot):
        size = snapshot.attestation_bytes()
    elif type(snapshot) is dict and type(ids := snapshot.get(ATTESTATION_KEY)) is list:
        size = sum(_utf8_len(i) for i in ids if type(i) is str)
    if size > limits.attestation_bytes:
        raise RecordTooLarge(
            f"attestation_ids of {size} bytes is over the limit of {limits.attestation_bytes} "
            "(REPLAYWATCH_MAX_ATTESTATION_BYTES)"
        )
    tools = parsed.get("tool_events", ABSENT)
    return Attempt(
        run_id=rec["run_id"],
        step_id=rec["step_id"],
        number=rec["attempt"],
        output_snapshot=parsed.get("output_snapshot"),
        tool_events=tools,
        event_id=rec["event_id"],
        status=rec["status"],
        occurred_at_ms=rec["occurred_at"],
        provider=rec.get("provider"),
        provider_version=rec.get("provider_version"),
        latency_ms=latency_of(rec.get("latency_ms")),
        kind=None if limits.kind_path is None else kind_of(rec.get("spec_snapshot"), limits.kind_path),
    )


def latency_of(value: Any) -> float | None:
    """A latency in ms, when ``value`` is a finite number at least 0 (else unknown)."""
    if type(value) in (int, float) and math.isfinite(value) and value >= 0:  # a boolean is no latency
        return float(value)
    return None


def encode_attempt(record: dict[str, Any], *, schema_id: int | None = None) -> bytes:
    """Avro binary of a StepAttemptEvent (dict with the schema's fields; JSON fields as
    text). With ``schema_id``, in the Confluent wire format."""
    buf = io.BytesIO()
    if schema_id is not None:
        buf.write(_HEADER.pack(0, schema_id))
    full = {name: None for name in JSON_FIELDS} | {"latency_ms": None, "provider": None, "provider_version": None}
    fastavro.schemaless_writer(buf, load_schema(ATTEMPT_SCHEMA), full | record)
    return buf.getvalue()


def comparison_record(
    c: Comparison,
    *,
    diff_uri: str | None,
    source: tuple[str, int, int],
    occurred_at_ms: int,
    detected_at_ms: int,
    settings_fingerprint: str | None = None,
    event_id: str | None = None,
    supersedes: str | None = None,
    provider: str | None = None,
    detail_url: str | None = None,
) -> dict[str, Any]:
    """The event of one comparison. ``event_id`` and ``supersedes``: a re-scoring's event,
    which replaces ``supersedes`` (else the comparison's own id, and None)."""
    return {
        "event_id": event_id or c.event_id,
        "verdict": c.verdict.value,
        "run_id": c.run_id,
        "step_id": c.step_id,
        "baseline_attempt": c.baseline_attempt,
        "current_attempt": c.current_attempt,
        "token_delta": c.token_delta,
        "cost_delta": c.cost_delta,
        "tokens_within": c.tokens_within,
        "cost_within": c.cost_within,
        "structure_equal": c.structure_equal,
        "tool_events_equal": c.tool_events_equal,
        "tolerance_tokens": c.tokens_tolerance,
        "tolerance_cost": c.cost_tolerance,
        "missing_attestations": list(c.missing_attestations),
        "unexpected_attestations": list(c.unexpected_attestations),
        "diff_kind": c.diff.kind.value if c.diff else None,
        "diff_sha256": c.diff.sha256 if c.diff else None,
        "diff_uri": diff_uri,
        "source_topic": source[0],
        "source_partition": source[1],
        "source_offset": source[2],
        "occurred_at": occurred_at_ms,
        "detected_at": detected_at_ms,
        "missing_attestations_count": len(c.missing_attestations),
        "unexpected_attestations_count": len(c.unexpected_attestations),
        "attestations_truncated": False,
        "settings_fingerprint": settings_fingerprint or c.settings_fingerprint or None,
        "supersedes": supersedes,
        "policy": c.policy,
        "tool_events_added": c.tool_changes.added,
        "tool_events_removed": c.tool_changes.removed,
        "tool_events_moved": c.tool_changes.moved,
        "tool_events_changed": c.tool_changes.changed,
        "provider": provider,
        "detail_url": detail_url,
    } | _graded_fields(c)


def _graded_fields(c: Comparison) -> dict[str, Any]:
    """What alerting reads of a graded comparison: the structure score and the paths
    that decided, the tool calls' precision and recall, the latencies."""
    return {
        "structure_score": c.structure_score,
        "deciding_paths": list(c.deciding_paths),
        "tool_precision": c.tools.precision,
        "tool_recall": c.tools.recall,
        "tool_f1": c.tools.f1,
        "tools_added": list(c.tools.added_tools),
        "baseline_latency_ms": c.latency[0],
        "current_latency_ms": c.latency[1],
        "latency_delta_ms": c.latency_delta,
        "latency_within": c.latency_within,
    } | _envelope_fields(c)


def _envelope_fields(c: Comparison) -> dict[str, Any]:
    """Under an adaptive policy: who decided, the cohort, and the envelope crossed."""
    first = c.crossings[0] if c.crossings else None
    return {
        "regime": c.regime,
        "cohort": c.cohort,
        "envelope": first.envelope if first else None,
        "envelope_path": first.path if first else None,
        "envelope_figure": first.figure if first else None,
        "envelope_limit": first.limit if first else None,
        "envelopes_crossed": [x.describe() for x in c.crossings],
    }


def encode_comparison(record: dict[str, Any], max_bytes: int | None = None, schema_id: int | None = None) -> bytes:
    """``encode_comparison_body`` in the Confluent wire format when ``schema_id`` is given
    (the id the registry gave ReplayComparisonEvent), else plain Avro."""
    if schema_id is None:
        return encode_comparison_body(record, max_bytes)
    header = _HEADER.pack(0, schema_id)
    return header + encode_comparison_body(record, None if max_bytes is None else max_bytes - len(header))


def encode_comparison_body(record: dict[str, Any], max_bytes: int | None = None) -> bytes:
    """Avro binary of a ReplayComparisonEvent. With ``max_bytes``, an event that would be
    larger has its attestation lists cut (missing first, then unexpected, in order)
    until it fits, and says so (``attestations_truncated``; the counts stay whole).
    An event that cannot fit even with empty lists is returned as it is: the publisher
    dead-letters what its topic cannot take."""
    value = _encode(record)
    if max_bytes is None or len(value) <= max_bytes:
        return value
    missing, unexpected = record["missing_attestations"], record["unexpected_attestations"]
    bare = record | {"missing_attestations": [], "unexpected_attestations": [], "attestations_truncated": True}
    budget = max_bytes - len(_encode(bare)) - 16  # 16: the arrays' block headers
    if budget < 0:
        return value
    kept: list[list[str]] = [[], []]
    for n, ids in enumerate((missing, unexpected)):
        for i in ids:
            cost = _utf8_len(i) + 5  # the string and its length (a varint, 5 bytes at most)
            if cost > budget:
                break
            budget -= cost
            kept[n].append(i)
    return _encode(bare | {"missing_attestations": kept[0], "unexpected_attestations": kept[1]})


def _encode(record: dict[str, Any]) -> bytes:
    """Avro binary of a ReplayComparisonEvent: natively where that path is on and takes
    the record, else (and for what it leaves, with the reference's errors) fastavro."""
    fast = native.avro(_schema_json(COMPARISON_SCHEMA))
    if fast is not None:
        try:
            return fast.encode(record)
        except native.Mismatch:
            pass
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, load_schema(COMPARISON_SCHEMA), record)
    return buf.getvalue()


def decode_comparison(value: bytes) -> dict[str, Any]:
    """An output event, plain Avro or in the Confluent wire format (this version's schema)."""
    buf = io.BytesIO(value)
    if value[:1] == b"\x00":  # framed: a plain event starts with its event id's length, never 0
        buf.seek(5)
    rec: dict[str, Any] = fastavro.schemaless_reader(buf, load_schema(COMPARISON_SCHEMA), None)  # type: ignore[assignment]
    return rec
