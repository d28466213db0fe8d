"""Would a reader schema that leaves out the fields replaywatch never reads let
fastavro skip them for less? Decodes the e2e fleet (its unread fields are null) and the
same fleet with 4 KB in unread fields, with the writer schema alone (what the pipeline
does) and resolved to a reader schema without the eight unread fields; best of 3.

Usage: python bench/reader_schema.py
"""

from __future__ import annotations

import copy
import io
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e import fleet

from replaywatch import codec

UNREAD = {"latency_ms", "spec_snapshot", "input_snapshot", "error_snapshot", "checkpoint", "budget_snapshot",
          "guardrail_events", "artifacts"}  # fmt: skip


def best_of_3(decode: Callable[[bytes], Any], records: list[bytes]) -> float:
    """µs per record, the best of three passes."""
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for value in records:
            decode(value)
        best = min(best, (time.perf_counter() - t0) / len(records) * 1e6)
    return best


def main() -> None:
    full = json.loads(codec.schema_text(codec.ATTEMPT_SCHEMA))
    slim = copy.deepcopy(full)
    slim["fields"] = [f for f in full["fields"] if f["name"] not in UNREAD]
    writer = codec.load_schema(codec.ATTEMPT_SCHEMA)
    reader = fastavro.parse_schema(slim)
    events = fleet(30_000, seed=5)
    big = {"input_snapshot": json.dumps({"prompt": "x" * 2000}), "spec_snapshot": json.dumps({"spec": "y" * 1000}),
           "checkpoint": json.dumps({"c": "z" * 1000}), "budget_snapshot": '{"b": 1}', "latency_ms": 120}  # fmt: skip
    fleets = {
        "the e2e fleet (unread fields null)": [codec.encode_attempt(e) for e in events],
        "with 4 KB in unread fields": [codec.encode_attempt(e | big) for e in events],
    }
    print("| records | writer schema alone (the pipeline) | resolved to a reader schema without them |")
    print("|---|---:|---:|")
    for label, records in fleets.items():
        alone = best_of_3(lambda b: fastavro.schemaless_reader(io.BytesIO(b), writer, None), records)
        resolved = best_of_3(lambda b: fastavro.schemaless_reader(io.BytesIO(b), writer, reader), records)
        print(f"| {label} | {alone:.2f} µs | {resolved:.2f} µs |")


if __name__ == "__main__":
    main()
