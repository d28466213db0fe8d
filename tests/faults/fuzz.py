"""Fuzzed input: records that must be dead-lettered (with the reason they should get),
and odd but valid attempts that must be processed."""

from __future__ import annotations

import io
import json
import random
import struct
import uuid
from importlib import resources
from typing import Any

import fastavro
import orjson

from replaywatch import codec

NOW = 1_790_000_000_000


def _schema_variant(change: str) -> Any:
    doc = json.loads((resources.files("replaywatch.schemas") / "step_attempt.avsc").read_text())
    doc = codec._without_logical_types(doc)
    for f in doc["fields"]:
        if change == "long_attempt" and f["name"] == "attempt":
            f["type"] = "long"
        if change == "extra_status" and f["name"] == "status":
            f["type"]["symbols"] = [*f["type"]["symbols"], "exploded"]
    return fastavro.parse_schema(doc)


def _write(schema: Any, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    full = {n: None for n in codec.JSON_FIELDS} | {"latency_ms": None, "provider": None, "provider_version": None}
    fastavro.schemaless_writer(buf, schema, full | record)
    return buf.getvalue()


def base(rng: random.Random, run: str = "fuzz-run") -> dict[str, Any]:
    return {
        "event_id": str(uuid.UUID(int=rng.getrandbits(128))), "run_id": run, "step_id": f"s{rng.randrange(50)}",
        "attempt": rng.randrange(1, 5), "status": "succeeded", "occurred_at": NOW,
        "output_snapshot": orjson.dumps({"m": rng.random(), "tokens": 5}).decode(),
    }  # fmt: skip


def bad_records(n: int, seed: int, *, huge: int = 0) -> list[tuple[str, bytes]]:
    """``n`` records that break the contract, as (expected reason, value)."""
    rng = random.Random(seed)
    long_attempt = _schema_variant("long_attempt")
    extra_status = _schema_variant("extra_status")
    deep = "[" * 10_000 + "]" * 10_000

    def one(kind: int) -> tuple[str, bytes]:
        good = codec.encode_attempt(base(rng))
        if kind == 0:
            return "avro_decode", bytes(rng.randrange(1, 256) for _ in range(rng.randrange(1, 300)))
        if kind == 1:
            return "avro_decode", good[: rng.randrange(1, len(good) - 1)]
        if kind == 2:
            return "unknown_schema_id", struct.pack(">bI", 0, rng.randrange(2, 10**6)) + good
        if kind == 3:
            return "invalid_json", codec.encode_attempt(base(rng) | {"output_snapshot": '{"a": [1, 2'})
        if kind == 4:
            return "too_deep", codec.encode_attempt(base(rng) | {"tool_events": deep})
        if kind == 5:
            text = rng.choice(['{"a": NaN}', '{"a": Infinity}', "[-Infinity]"])
            return "invalid_json", codec.encode_attempt(base(rng) | {"output_snapshot": text})
        if kind == 6:
            return "invalid_json", codec.encode_attempt(base(rng) | {"output_snapshot": '{"a": "\\ud800"}'})
        if kind == 7:
            return "contract", codec.encode_attempt(base(rng) | {"attempt": -rng.randrange(1, 2**31)})
        if kind == 8:
            return "contract", _write(long_attempt, base(rng) | {"attempt": rng.randrange(2**31, 2**62)})
        if kind == 9:
            return "avro_decode", _write(extra_status, base(rng) | {"status": "exploded"})
        if kind == 10:
            placeholder = "\u00ff\u00ff"
            raw = codec.encode_attempt(base(rng) | {"run_id": placeholder})
            return "avro_decode", raw.replace(placeholder.encode(), b"\xff\xfe\xfd\xfc", 1)
        if kind == 11:
            return "contract", codec.encode_attempt(base(rng) | {"run_id": "a\x00b"})
        return "contract", codec.encode_attempt(base(rng) | {"event_id": "definitely-not-a-uuid"})

    out = [one(i % 13) for i in range(n)]
    rng.shuffle(out)
    return out


def odd_but_valid(seed: int, *, huge: int) -> list[dict[str, Any]]:
    """Attempts that are strange but keep the contract: they must be processed."""
    rng = random.Random(seed)
    events = []
    for i in range(huge):  # 10 MB snapshots, as pairs so that they are compared
        blob = {"data": "x" * (10 * 1024 * 1024), "tokens": 7}
        for n in (1, 2):
            events.append(
                base(rng, f"huge-{seed}-{i}")
                | {"step_id": "big", "attempt": n, "output_snapshot": orjson.dumps(blob).decode()}
            )
    weird = ["😀👩‍👩‍👧", "\u202eRTL", "e\u0301", "zero\u200bwidth", "\u0000nul-in-json", "日本語", ""]
    for i, w in enumerate(weird):
        run = f"unicode-{seed}-{i}-{w.replace(chr(0), '')}"
        for n in (1, 2):
            snap = {"text": w, "n": n if i % 2 else 1, "nested": {w or "k": [w]}, "tokens": 3}
            events.append(
                base(rng, run)
                | {
                    "step_id": f"step-{w.replace(chr(0), '')}",
                    "attempt": n,
                    "output_snapshot": orjson.dumps(snap).decode(),
                }
            )
    for n in (2**31 - 2, 2**31 - 1):
        events.append(base(rng, f"enormous-{seed}") | {"step_id": "s", "attempt": n})
    return events
