"""The rates topic's records: a closed window as a ReplayRateEvent (``schemas/replay_rate.avsc``),
plain Avro or in the Confluent wire format."""

from __future__ import annotations

import io
from typing import Any, Final

import fastavro

from replaywatch.codec import load_schema
from replaywatch.rates.alerts import parts
from replaywatch.rates.closing import Rate
from replaywatch.rates.tally import CAUSES, INDEX

RATE_SCHEMA: Final = "replay_rate.avsc"


def rate_key(cohort: str, policy: str) -> bytes:
    return f"{cohort}#{policy}".encode()


def rate_record(rate: Rate) -> dict[str, Any]:
    provider, version, kind = parts(rate.cohort)
    counts = rate.named()
    return {
        "cohort": rate.cohort, "provider": None if provider == "-" else provider,
        "provider_version": None if version == "-" else version, "kind": kind, "policy": rate.policy,
        "width_seconds": rate.width_ms // 1000, "window_start": rate.start_ms,
        "window_end": rate.start_ms + rate.width_ms,
        "version": rate.version, "comparisons": rate.comparisons, "drift_rate": rate.rate,
        **{v: counts[v] for v in ("within_tolerance", "drift", "attestation_divergence", "tool_event_divergence")},
        "causes": {c: rate.counts[INDEX[c]] for c in CAUSES}, "late": counts["late"],
    }  # fmt: skip


def encode_rate(rate: Rate, schema_id: int | None = None) -> bytes:
    buf = io.BytesIO()
    if schema_id is not None:
        buf.write(b"\x00" + schema_id.to_bytes(4, "big"))
    fastavro.schemaless_writer(buf, load_schema(RATE_SCHEMA), rate_record(rate))
    return buf.getvalue()


def decode_rate(value: bytes) -> dict[str, Any]:
    buf = io.BytesIO(value)
    if value[:1] == b"\x00":  # framed: a plain record starts with its cohort's length, never 0
        buf.seek(5)
    rec: dict[str, Any] = fastavro.schemaless_reader(buf, load_schema(RATE_SCHEMA), None)  # type: ignore[assignment]
    return rec
