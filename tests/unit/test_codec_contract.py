"""The codec's contract checks and byte limits, and per-record isolation in the pure
batch functions: what one record holds never stops the others."""

from __future__ import annotations

import uuid
from typing import Any, cast

import orjson
import pytest

from replaywatch import codec
from replaywatch.compare import CompareConfig
from replaywatch.core import batch
from replaywatch.exceptions import RecordFailed

NOW = 1_790_000_000_000


def event(**fields: Any) -> dict[str, Any]:
    return {"event_id": str(uuid.uuid4()), "run_id": "r", "step_id": "s", "attempt": 1, "status": "succeeded",
            "occurred_at": NOW, "output_snapshot": '{"a": 1}'} | fields  # fmt: skip


def reason(value: bytes, limits: codec.Limits = codec.DEFAULT_LIMITS) -> str | None:
    try:
        codec.decode_attempt(value, limits)
    except codec.BadRecordError as exc:
        return exc.reason
    return None


@pytest.mark.parametrize(("char", "width"), [("a", 1), ("é", 2), ("語", 3), ("😀", 4)])
def test_ids_are_limited_in_utf8_bytes_not_characters(char: str, width: int) -> None:
    limits = codec.Limits(id_bytes=2048)
    ids = char * 1024
    got = reason(codec.encode_attempt(event(run_id=ids, step_id="s")), limits)
    assert got == (None if 1024 * width <= 2048 else "too_large")
    assert reason(codec.encode_attempt(event(run_id=ids, step_id=ids))) is None  # the default takes 4 KB ids
    assert reason(codec.encode_attempt(event(run_id=char * 1025))) == "contract"  # 1,024 characters at most


def test_record_attestation_and_tool_event_limits() -> None:
    limits = codec.Limits(record_bytes=10_000, attestation_bytes=1000, tool_events_bytes=500)
    assert reason(codec.encode_attempt(event(output_snapshot='{"x": "' + "y" * 20_000 + '"}')), limits) == "too_large"
    ids = orjson.dumps({"attestation_ids": [f"id-{i:05d}" for i in range(200)]}).decode()  # 1,800 bytes
    assert reason(codec.encode_attempt(event(output_snapshot=ids)), limits) == "too_large"
    assert reason(codec.encode_attempt(event(output_snapshot=ids))) is None
    tools = orjson.dumps([{"out": "z" * 600}]).decode()
    assert reason(codec.encode_attempt(event(tool_events=tools)), limits) == "too_large"
    with pytest.raises(codec.BadRecordError) as raised:
        codec.decode_attempt(codec.encode_attempt(event(tool_events=tools)), limits)
    assert "REPLAYWATCH_MAX_TOOL_EVENTS_BYTES" in str(raised.value) and str(len(tools)) in str(raised.value)


def test_too_deep_json_in_any_field_is_too_deep() -> None:
    deep = "[" * 1025 + "]" * 1025
    assert reason(codec.encode_attempt(event(tool_events=deep))) == "too_deep"
    assert reason(codec.encode_attempt(event(output_snapshot=deep))) == "too_deep"


def test_an_event_over_its_topic_limit_is_cut_and_says_so() -> None:
    from replaywatch.compare import Attempt, compare_attempts

    ids = [f"att-{i:06d}" for i in range(20_000)]
    c = compare_attempts(Attempt("r", "s", 1, {"attestation_ids": ids}), Attempt("r", "s", 2, {"attestation_ids": []}),
                         CompareConfig())  # fmt: skip
    rec = codec.comparison_record(c, diff_uri=None, source=("t", 0, 1), occurred_at_ms=NOW, detected_at_ms=NOW)
    whole = codec.encode_comparison(rec)
    cut = codec.encode_comparison(rec, max_bytes=50_000)
    assert len(whole) > 200_000 and len(cut) <= 50_000
    got = codec.decode_comparison(cut)
    assert got["attestations_truncated"] and got["missing_attestations_count"] == 20_000
    assert (
        got["missing_attestations"] == ids[: len(got["missing_attestations"])]
        and len(got["missing_attestations"]) > 1000
    )
    assert not codec.decode_comparison(whole)["attestations_truncated"]
    assert codec.encode_comparison(rec, max_bytes=len(whole)) == whole


class Record:
    def __init__(self, offset: int, value: bytes) -> None:
        self.topic, self.partition, self.offset, self.value, self.key, self.headers = "in", 0, offset, value, b"k", ()
        self.timestamp = 0


def test_an_exception_raised_by_one_record_sets_only_that_record_aside(monkeypatch: pytest.MonkeyPatch) -> None:
    records = [
        Record(i, codec.encode_attempt(event(step_id=f"s{i}", output_snapshot=f'{{"n": {i}}}'))) for i in range(5)
    ]
    real = codec.read_attempt

    def flaky(value: bytes, limits: codec.Limits = codec.DEFAULT_LIMITS, writers: Any = None) -> Any:
        if b'"n": 2' in value:
            raise KeyError("a bug")
        return real(value, limits, writers)

    monkeypatch.setattr(codec, "read_attempt", flaky)  # decode_records reads, then parses
    good, bad = batch.decode_records(records)
    assert [r.offset for r, _ in good] == [0, 1, 3, 4]
    assert [(r.offset, e.reason) for r, e in bad] == [(2, "internal")]
    assert isinstance(bad[0][1], RecordFailed) and "KeyError" in str(bad[0][1])


def test_a_comparison_that_raises_sets_only_its_record_aside(monkeypatch: pytest.MonkeyPatch) -> None:
    from replaywatch.core import projection

    records = [
        Record(i, codec.encode_attempt(event(step_id=f"s{i % 2}", attempt=i, output_snapshot="{}"))) for i in range(4)
    ]
    decoded, _ = batch.decode_records(records)
    real = projection.apply

    def flaky(proj: Any, attempt: Any, config: CompareConfig, judge: Any = None) -> Any:
        if attempt.number == 3:
            raise RecursionError("a walk that recursed")
        return real(proj, attempt, config, judge)

    monkeypatch.setattr(batch, "apply", flaky)
    result = batch.apply_records(decoded, {}, CompareConfig())
    assert [(r.offset, e.reason) for r, e in result.bad] == [(3, "internal")]
    assert {k[1]: p.current.number for k, (_, p) in result.projections.items() if p.current} == {"s0": 2, "s1": 1}
    assert [r.offset for r, _, _ in result.emitted] == [2]


def test_bad_records_come_out_in_input_order_whichever_half_found_them() -> None:
    """Bad JSON is found when a record is parsed, bad Avro when it is read: the dead
    letters still follow the input."""
    records = [Record(0, codec.encode_attempt(event(output_snapshot='{"a": ['))), Record(1, b"\x01not avro"),
               Record(2, codec.encode_attempt(event()))]  # fmt: skip
    good, bad = batch.decode_records(records)
    assert [r.offset for r, _ in good] == [2]
    assert [(r.offset, e.reason) for r, e in bad] == [(0, "invalid_json"), (1, "avro_decode")]


def test_a_record_whose_event_cannot_be_encoded_changes_nothing_and_is_dead_lettered() -> None:
    """Its step stays as it was (a later attempt compares against the same baseline),
    and the records after it, of its step and of others, are compared and encoded."""
    records = [Record(i, codec.encode_attempt(event(step_id=f"s{i // 3}", attempt=1 + i % 3,
                                                    output_snapshot=f'{{"v": {i}}}'))) for i in range(6)]  # fmt: skip
    decoded, _ = batch.decode_records(records)

    def encode(record: Any, attempt: Any, c: Any) -> Any:
        if record.offset == 1:
            raise UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed")
        return (record.offset, c.baseline_attempt, c.current_attempt), None

    result = batch.apply_records(decoded, {}, CompareConfig(), encode=encode)
    assert [(r.offset, e.reason) for r, e in result.bad] == [(1, "internal")]
    assert "UnicodeEncodeError while encoding its event" in str(result.bad[0][1])
    # s0: attempt 2 said nothing and changed nothing, so attempt 3 is compared with 1
    assert [cast(Any, rows) for rows, _ in result.encoded] == [(2, 1, 3), (4, 1, 2), (5, 1, 3)]
    assert [r.offset for r, _, _ in result.emitted] == [2, 4, 5]
    s0 = result.projections[("r", "s0")][1]
    assert s0.baseline is not None and s0.current is not None
    assert (s0.baseline.number, s0.current.number, s0.max_attempt) == (1, 3, 3)
