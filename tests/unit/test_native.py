"""The native path (``native/``, Rust) against its Python reference, on every input class
the engine accepts and on what it refuses:

- the snapshot walk (usage keys out, ignored paths out, usage numbers found) and the
  ignore rules' walk over tool events: the same structure (key order and types
  included), numbers, rules matched and units of work charged as the reference's
  (``structure._strip``, ``structure._drop_ignored``), on any document, preset and rule
  set, at the contract's depth, and with what only the reference takes (keys that are
  not strings, more than 64 patterns);
- the Avro codec: the same bytes as fastavro's writer for any record of the output
  schema; the same record and end as fastavro's reader for any input record; and on
  any bytes or malformed record, through ``codec``, the same result or the same error
  as with the native path off.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Iterator
from typing import Any

import fastavro
import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from replaywatch import codec, native
from replaywatch.compare import CompareConfig, budget, engine, ignore, structure
from replaywatch.compare.attestations import ATTESTATION_KEY
from replaywatch.compare.usage import PRESETS, sum_parts
from replaywatch.exceptions import BadRecordError
from tests.unit.strategies import USAGE_KEYS, documents, ignore_paths, json_values, same

rule_sets = st.lists(ignore_paths(("output_snapshot", "tool_events", "**")), min_size=1, max_size=5)
"""Ignore rules of either document (or both, ``**``), over ``documents``' keys."""


@pytest.fixture(autouse=True)
def native_on() -> Iterator[None]:
    assert native.use("auto"), (
        "the native module is not built: install Rust (cargo) and reinstall replaywatch (pip install -e .)"
    )
    yield
    native.use("auto")


def test_the_native_module_is_built_and_taken() -> None:
    assert native.built() and native.active()
    assert not native.use("off") and not native.active()
    assert native.use("on")


def reference_strip(doc: Any, preset: str, patterns: tuple[ignore.Pattern, ...]) -> tuple[Any, ...]:
    automaton = ignore.matcher(patterns)
    with budget.limited(1e9) as b:
        got = structure._strip(doc, PRESETS[preset], automaton if automaton.start >= 0 else None)
    return (*got, b.spent)


def native_strip(doc: Any, preset: str, patterns: tuple[ignore.Pattern, ...]) -> tuple[Any, ...]:
    usage = PRESETS[preset]
    fast = native.usage(usage, structure._TOP)
    automaton = native.automaton(patterns) if patterns else None
    assert fast is not None and (automaton is not None or not patterns)
    out, tokens, cost, matched, parts, units = native.strip(doc, fast, automaton)
    if tokens is None and usage.token_parts:
        tokens = sum_parts(parts)
    return out, tokens, cost, matched, units


def assert_same(got: tuple[Any, ...], want: tuple[Any, ...]) -> None:
    assert same(got[0], want[0]), (got[0], want[0])
    for g, w in zip(got[1:], want[1:], strict=True):
        assert g == w or (isinstance(g, float) and isinstance(w, float) and math.isnan(g) and math.isnan(w)), (g, w)


@settings(max_examples=1500, deadline=None)
@given(doc=documents | json_values, rules=rule_sets | st.just([]), preset=st.sampled_from(sorted(PRESETS)))
def test_the_snapshot_walk_is_the_reference(doc: Any, rules: list[str], preset: str) -> None:
    patterns = ignore.IgnoreRules.compile(rules).output
    assert_same(native_strip(doc, preset, patterns), reference_strip(doc, preset, patterns))


@settings(max_examples=1500, deadline=None)
@given(doc=documents | json_values, rules=rule_sets)
def test_the_tool_events_walk_is_the_reference(doc: Any, rules: list[str]) -> None:
    patterns = ignore.IgnoreRules.compile(rules).tools
    assume(patterns)
    automaton = native.automaton(patterns)
    assert automaton is not None
    kept, matched, units = native.drop_ignored(doc, automaton)
    with budget.limited(1e9) as b:
        want, want_matched = structure._drop_ignored(doc, patterns)
    assert same(kept, want) and (matched, units) == (want_matched, b.spent)


@pytest.mark.parametrize(
    "number",
    [2**1100, -(2**1100), 2**63, True, False, "12", 1.5e308, -0.0, 0],
    ids=["beyond-double", "below-double", "beyond-64-bits", "true", "false", "text", "huge-float", "-0.0", "zero"],
)
def test_usage_numbers_of_every_kind(number: Any) -> None:
    doc = {"usage": {"total_tokens": number, "prompt_tokens": number, "cost": number}, "a": [{"tokens": number}]}
    for preset in PRESETS:
        assert_same(native_strip(doc, preset, ()), reference_strip(doc, preset, ()))


@pytest.mark.parametrize("depth", [1, 255, 1024])
def test_documents_at_the_contracts_depth(depth: int) -> None:
    doc: Any = {"id": 1, "tokens": 3}
    for n in range(depth):
        doc = [doc, {"id": n}] if n % 2 else {"a": doc, "cost": 0.5, "id": "x"}
    patterns = ignore.IgnoreRules.compile(["**.id", "output_snapshot.a[0].a"]).output
    assert_same(native_strip(doc, "all", patterns), reference_strip(doc, "all", patterns))


def test_what_only_the_reference_takes_goes_to_it() -> None:
    doc = {1: {"id": 2}, "id": 3, "tokens": 4}  # a key that is not a string
    patterns = ignore.IgnoreRules.compile(["**.id"]).output
    automaton = native.automaton(patterns)
    assert automaton is not None
    with pytest.raises(native.Mismatch):
        native.drop_ignored(doc, automaton)
    assert structure.strip_and_drop(doc, PRESETS["all"], patterns) == reference_strip(doc, "all", patterns)[:4]
    assert structure.drop_ignored(doc, patterns) == structure._drop_ignored(doc, patterns) == ({1: {}, "tokens": 4}, 1)
    many = ignore.IgnoreRules.compile([f"output_snapshot.k{n}" for n in range(65)]).output
    assert native.automaton(many) is None  # more than 64 patterns: the reference's automaton
    assert structure.strip_and_drop({"k64": 1, "k0": 2, "b": 3}, PRESETS["all"], many)[0] == {"b": 3}


def test_the_walks_charge_the_records_budget() -> None:
    doc = {"a": [{"b": 1}] * 40_000}
    patterns = ignore.IgnoreRules.compile(["**.b"]).output
    with budget.limited(1e9) as b:
        structure.strip_and_drop(doc, PRESETS["all"], patterns)
    assert b.spent == reference_strip(doc, "all", patterns)[-1] > 120_000


# --- Avro ------------------------------------------------------------------------------


def _schema(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = codec._without_logical_types(json.loads(codec.schema_text(name)))
    return doc


def avro_values(schema: Any) -> st.SearchStrategy[Any]:
    """Any value of an Avro type (the types the schemas use)."""
    if isinstance(schema, list):
        return st.one_of(*(avro_values(s) for s in schema))
    if isinstance(schema, dict):
        kind = schema["type"]
        if kind == "record":
            return st.fixed_dictionaries({f["name"]: avro_values(f["type"]) for f in schema["fields"]})
        if kind == "enum":
            return st.sampled_from(schema["symbols"])
        if kind == "array":
            return st.lists(avro_values(schema["items"]), max_size=4)
        return avro_values(kind)
    return {
        "null": st.none(),
        "boolean": st.booleans(),
        "int": st.integers(-(2**31), 2**31 - 1),
        "long": st.integers(-(2**63), 2**63 - 1),
        "double": st.floats() | st.integers(-(2**53), 2**53),
        "string": st.text(max_size=20),
        "bytes": st.binary(max_size=20),
    }[schema]


OUTPUT = _schema(codec.COMPARISON_SCHEMA)
INPUT = _schema(codec.ATTEMPT_SCHEMA)


def fastavro_bytes(schema_name: str, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, codec.load_schema(schema_name), record)
    return buf.getvalue()


@settings(max_examples=500, deadline=None)
@given(record=avro_values(OUTPUT))
def test_the_encoder_writes_fastavros_bytes(record: dict[str, Any]) -> None:
    fast = native.avro(codec._schema_json(codec.COMPARISON_SCHEMA))
    assert fast is not None
    assert fast.encode(record) == fastavro_bytes(codec.COMPARISON_SCHEMA, record)


def outcome(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(*args)
    except Exception as exc:  # the reference's error, whatever its kind
        return type(exc).__name__, str(exc)


def both_ways(fn: Any, *args: Any) -> tuple[tuple[str, Any], tuple[str, Any]]:
    got = outcome(fn, *args)
    native.use("off")
    try:
        want = outcome(fn, *args)
    finally:
        native.use("auto")
    return got, want


def malformed(record: dict[str, Any], data: st.DataObject) -> dict[str, Any]:
    """The record with one field gone or given a value of another kind."""
    name = data.draw(st.sampled_from(sorted(record)))
    if data.draw(st.booleans()):
        return {k: v for k, v in record.items() if k != name}
    other = data.draw(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=3),
                                st.lists(st.integers(), max_size=2), st.binary(max_size=2),
                                st.just(2**70)))  # fmt: skip
    return record | {name: other}


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=avro_values(OUTPUT), data=st.data())
def test_a_malformed_output_record_gets_the_references_answer(record: dict[str, Any], data: st.DataObject) -> None:
    bad = malformed(record, data)
    got, want = both_ways(codec.encode_comparison_body, bad)
    assert got == want


@settings(max_examples=500, deadline=None)
@given(record=avro_values(INPUT), frame=st.booleans())
def test_the_decoder_reads_what_fastavro_reads(record: dict[str, Any], frame: bool) -> None:
    value = fastavro_bytes(codec.ATTEMPT_SCHEMA, record)
    fast = native.avro(codec._schema_json(codec.ATTEMPT_SCHEMA))
    assert fast is not None
    got, end = fast.decode(b"\0\0\0\0\1" + value if frame else value, 5 if frame else 0)
    assert end == len(value) + (5 if frame else 0)
    assert same(got, fastavro.schemaless_reader(io.BytesIO(value), codec.load_schema(codec.ATTEMPT_SCHEMA), None))


@settings(max_examples=1500, deadline=None)
@given(record=avro_values(INPUT), edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=3),
       cut=st.integers(0, 10_000) | st.none(), tail=st.binary(max_size=3))  # fmt: skip
def test_any_bytes_get_the_references_answer(
    record: dict[str, Any], edits: list[tuple[int, int]], cut: int | None, tail: bytes
) -> None:
    value = bytearray(fastavro_bytes(codec.ATTEMPT_SCHEMA, record))
    for at, byte in edits:
        value[at % len(value)] = byte
    data = bytes(value[:cut] if cut is not None else value) + tail
    got, want = both_ways(codec.read_attempt, data)
    if got[0] == "ok" and want[0] == "ok":
        assert same(got[1], want[1])
    else:
        assert got == want
    fast = native.avro(codec._schema_json(codec.ATTEMPT_SCHEMA))
    assert fast is not None
    try:
        rec, end = fast.decode(data, 0)
    except native.Mismatch:
        return
    buf = io.BytesIO(data)
    assert same(rec, fastavro.schemaless_reader(buf, codec.load_schema(codec.ATTEMPT_SCHEMA), None))
    assert end == buf.tell()


@given(data=st.binary(max_size=64))
def test_random_bytes_get_the_references_answer(data: bytes) -> None:
    got, want = both_ways(codec.read_attempt, data)
    assert got == want or (got[0] == want[0] == "ok" and same(got[1], want[1]))
    with contextlib.suppress(BadRecordError):  # any other error fails the test
        codec.read_attempt(data)


# --- JSON read natively (``native.document``) and prepared from it ---------------------

numbers = st.builds(
    lambda sign, whole, frac, exp: f"{sign}{whole}{frac}{exp}",
    st.sampled_from(["", "-"]),
    st.sampled_from(["0", "1", "9", "10", "123456789012345678901234567890"]) | st.integers(0, 2**70).map(str),
    st.sampled_from(["", ".0", ".5", ".000001", ".1234567890123456789"])
    | st.integers(0, 10**20).map(lambda n: f".{n}"),
    st.sampled_from(["", "e0", "E5", "e-5", "e+16", "e308", "e309", "e-324", "e-400", "E400"])
    | st.integers(-400, 400).map(lambda n: f"e{n}"),
)
"""JSON number literals of every form the grammar allows: integers beyond 64 bits,
fractions, exponents past a double's range either way."""

texts_of = st.text(max_size=6) | st.sampled_from(
    ["\x00", "\x1f", "\x7f", '"', "\\", "/", "\u2028", "é", "😀", "\ud7ff"]
)

wide_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**65),
    st.floats(allow_nan=False, allow_infinity=False),
    texts_of,
)

wide_values = st.recursive(
    wide_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(USAGE_KEYS) | texts_of, children, max_size=5)
    ),
    max_leaves=25,
)

roots = st.lists(wide_values, max_size=4) | st.dictionaries(
    st.sampled_from(USAGE_KEYS) | texts_of, wide_values, max_size=6
)


def written(value: Any, form: str) -> str:
    """``value`` as JSON text in one of the ways producers write it."""
    if form == "compact":
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if form == "spaced":
        return json.dumps(value)
    if form == "indented":
        return json.dumps(value, indent=2, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=True)  # every non-ASCII character escaped, surrogate pairs too


forms = st.sampled_from(["compact", "spaced", "indented", "ascii"])


@st.composite
def json_texts(draw: st.DrawFn) -> str:
    """JSON texts: values written in any form, objects with repeated keys, number
    literals of every form, and texts that are not JSON at all."""
    kind = draw(st.sampled_from(["value", "repeated", "number", "any"]))
    if kind == "value":
        return written(draw(roots), draw(forms))
    if kind == "repeated":
        members = draw(st.lists(st.tuples(st.sampled_from(["a", "b", "tokens"]), wide_values), min_size=1, max_size=6))
        return "{" + ",".join(f"{json.dumps(k)}:{written(v, 'compact')}" for k, v in members) + "}"
    if kind == "number":
        return "[" + ",".join(draw(st.lists(numbers, min_size=1, max_size=4))) + "]"
    return draw(st.text(alphabet='{}[],:"\\ 0123456789.eE+-truefalsnu\x00é', max_size=20))


def read_by_orjson(text: str) -> tuple[str, Any]:
    try:
        return "value", orjson.loads(text)
    except orjson.JSONDecodeError:
        return "error", None


@settings(max_examples=3000, deadline=None)
@given(text=json_texts())
def test_the_reader_reads_what_orjson_reads(text: str) -> None:
    doc = native.document(text)
    outcome, want = read_by_orjson(text)
    if doc is None:  # left to orjson: a scalar, an error, or more than the reader takes
        return
    assert outcome == "value", f"the native reader took what orjson refuses: {text!r}"
    got = doc.value()
    assert same(got, want) and orjson.dumps(got) == orjson.dumps(want)
    ids = want.get(ATTESTATION_KEY) if type(want) is dict else None
    want_bytes = sum(len(i.encode()) for i in ids if type(i) is str) if type(ids) is list else 0
    assert doc.attestation_bytes() == want_bytes


@pytest.mark.parametrize(
    "text",
    ['{"a": 1', "[-0]", "[1,]", "[01]", "[1.]", "[.5]", "[NaN]", "[Infinity]", "[1e400]", "[-1e400]", '["\\ud800"]',
     '["\\udc00"]', '["a\x00"]', '{"a":1}x', "{'a':1}", '{"a" 1}', "", " ", "null", "1", '"text"', "true"],
)  # fmt: skip
def test_what_the_reader_does_not_take_goes_to_orjson(text: str) -> None:
    assert native.document(text) is None


def test_texts_longer_than_a_document_go_to_orjson() -> None:
    at_limit = "[" + "0," * ((native.DOCUMENT_CHARS - 3) // 2) + "0]"
    assert len(at_limit) <= native.DOCUMENT_CHARS and native.document(at_limit) is not None
    assert native.document("[" + "0," * (native.DOCUMENT_CHARS // 2) + "0]") is None


def test_documents_past_the_readers_depth_go_to_orjson() -> None:
    assert native.document("[" * 100 + "]" * 100) is not None
    deep = "[" * 1000 + "]" * 1000
    assert native.document(deep) is None
    assert orjson.loads(deep) is not None  # the contract takes it; orjson reads it


def prepared_by_the_reference(value: Any, tools: Any, config: CompareConfig) -> tuple[Any, int]:
    native.use("off")
    try:
        with budget.limited(1e9) as b:
            return engine.prepare(3, value, tools, config, 12.5), b.spent
    finally:
        native.use("auto")


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    snapshot=roots, tools=st.none() | roots, form=forms, rules=rule_sets | st.just([]),
    preset=st.sampled_from(sorted(PRESETS)),
)  # fmt: skip
def test_a_document_is_prepared_as_the_reference_prepares_its_value(
    snapshot: Any, tools: Any, form: str, rules: list[str], preset: str
) -> None:
    config = CompareConfig.build(ignore=rules, usage=preset)
    text, tools_text = written(snapshot, form), None if tools is None else written(tools, form)
    doc, tools_doc = native.document(text), None if tools_text is None else native.document(tools_text)
    assume(doc is not None and (tools_text is None or tools_doc is not None))
    assert doc is not None
    walked = structure.walk_documents(doc, tools_doc, config.usage, config.ignore, config.prep_key)
    assert walked is not None, "the native path took the documents"
    with budget.limited(1e9) as b:
        got = engine.prepare(3, doc, engine.ABSENT if tools_doc is None else tools_doc, config, 12.5)
    want, spent = prepared_by_the_reference(orjson.loads(text), engine.ABSENT if tools_text is None
                                            else orjson.loads(tools_text), config)  # fmt: skip
    assert got == want and b.spent == spent


@settings(max_examples=500, deadline=None)
@given(numbers=st.lists(st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**64), 2**64), max_size=8))
def test_numbers_are_written_as_orjson_writes_them(numbers: list[Any]) -> None:
    text = json.dumps(numbers)
    doc = native.document(text)
    if doc is None:  # only a negative zero is left to orjson (serde_json reads -0 as -0.0)
        assert any(n == 0 and math.copysign(1, n) < 0 for n in numbers if type(n) is float)
        return
    got = engine.prepare(0, doc, engine.ABSENT, CompareConfig())
    assert got.snapshot_json == orjson.dumps(orjson.loads(text))
    assert got.structure_fp == orjson.dumps(orjson.loads(text), option=orjson.OPT_SORT_KEYS)


@settings(max_examples=300, deadline=None)
@given(snapshot=roots, tools=st.none() | roots, ids=st.lists(texts_of, max_size=6))
def test_a_record_reads_the_same_with_documents(snapshot: Any, tools: Any, ids: list[str]) -> None:
    if isinstance(snapshot, dict):
        snapshot[ATTESTATION_KEY] = ids
    rec = {"event_id": "00000000-0000-4000-8000-000000000000", "run_id": "r", "step_id": "s", "attempt": 1,
           "status": "succeeded", "occurred_at": 0, "output_snapshot": json.dumps(snapshot),
           "tool_events": None if tools is None else json.dumps(tools)}  # fmt: skip
    limits = codec.Limits(attestation_bytes=8)
    both = [outcome(codec.parse_attempt, rec, limits, documents) for documents in (False, True)]
    assert both[0][0] == both[1][0]  # both read it, or both refuse it, with the same error
    if both[0][0] == "ok":
        plain, read = both[0][1], both[1][1]
        config = CompareConfig.build(usage="all")
        assert engine.prepare(1, read.output_snapshot, read.tool_events, config) == engine.prepare(
            1, plain.output_snapshot, plain.tool_events, config
        )
    else:
        assert both[0] == both[1]
