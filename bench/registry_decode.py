"""The decode cost with a schema registry: records per second decoded as the
pipeline decodes them, plain Avro against Confluent-framed records under two writer
schemas (v1, and v2 = v1 plus a field with a default, resolved to the reader), and the
requests made to the registry: one per schema id, not one per record.

Needs a registry (``REPLAYWATCH_SCHEMA_REGISTRY_URL``; ``make bench`` starts the devstack's).

Usage: python bench/registry_decode.py [--records 50000] [--batch 1000] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from typing import Any

import orjson
from confluent_kafka.schema_registry import SchemaRegistryClient, topic_subject_name_strategy
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from replaywatch import codec
from replaywatch.core.batch import decode_records
from replaywatch.stream.schema_registry import SchemaRegistry


class Record:
    __slots__ = ("offset", "partition", "topic", "value")

    def __init__(self, offset: int, value: bytes) -> None:
        self.topic, self.partition, self.offset, self.value = "bench", 0, offset, value


def event(n: int) -> dict[str, Any]:
    snapshot = {"answer": f"step output {n}", "usage": {"tokens": 600 + n % 7, "cost_usd": 0.002},
                "attestation_ids": ["att-1", "att-2"], "meta": {"request_id": f"req-{n}"}}  # fmt: skip
    return {"event_id": str(uuid.uuid4()), "run_id": f"run-{n // 4}", "step_id": f"step-{n % 4}", "attempt": n % 3,
            "status": "succeeded", "occurred_at": 1_790_000_000_000 + n, "provider": "openai",
            "output_snapshot": orjson.dumps(snapshot).decode(),
            "tool_events": orjson.dumps([{"tool": "search", "args": {"q": n}}]).decode()}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()
    url = os.environ.get("REPLAYWATCH_SCHEMA_REGISTRY_URL")
    if not url:
        raise SystemExit('set REPLAYWATCH_SCHEMA_REGISTRY_URL (eval "$(replaywatch devstack env)")')

    v1 = codec.schema_text(codec.ATTEMPT_SCHEMA)
    doc = json.loads(v1)
    doc["fields"].append({"name": "region", "type": ["null", "string"], "default": None})
    v2 = json.dumps(doc)
    client = SchemaRegistryClient({"url": url, "timeout": 10})
    ctx = SerializationContext(f"bench-registry-{uuid.uuid4().hex[:8]}", MessageField.VALUE)
    # by topic: from confluent-kafka 2.13 the default asks an "associations" API Apicurio lacks
    by_topic = {"subject.name.strategy": topic_subject_name_strategy}
    ser1, ser2 = AvroSerializer(client, v1, conf=dict(by_topic)), AvroSerializer(client, v2, conf=dict(by_topic))
    events = [event(n) for n in range(args.records)]
    plain = [Record(n, codec.encode_attempt(e)) for n, e in enumerate(events)]
    framed_v1 = [Record(n, ser1(e, ctx)) for n, e in enumerate(events)]
    framed = [
        Record(n, r.value if n % 2 else ser2(e | {"region": "eu"}, ctx))
        for n, (r, e) in enumerate(zip(framed_v1, events, strict=True))
    ]
    print(f"{args.records:,} records: plain {sum(len(r.value) for r in plain) / len(plain):.0f} B, "
          f"framed {sum(len(r.value) for r in framed) / len(framed):.0f} B on average")  # fmt: skip

    async def run() -> dict[str, Any]:
        schemas = SchemaRegistry.open(url)
        rates: dict[str, list[float]] = {"plain": [], "registry_v1": [], "registry": []}
        try:
            for _ in range(args.rounds):
                for name, records in (("plain", plain), ("registry_v1", framed_v1), ("registry", framed)):
                    t0 = time.perf_counter()
                    decoded = 0
                    for i in range(0, len(records), args.batch):
                        part = records[i : i + args.batch]
                        writers = await schemas.writers(r.value for r in part) if name != "plain" else None
                        good, bad = decode_records(part, writers=writers)
                        assert not bad, bad[:1]
                        decoded += len(good)
                    rates[name].append(decoded / (time.perf_counter() - t0))
        finally:
            await schemas.close()
        medians = {k: statistics.median(v) for k, v in rates.items()}
        return {"records": args.records, "rounds": args.rounds, "rates": rates, "medians": medians,
                "ratio": medians["registry"] / medians["plain"], "ratio_v1": medians["registry_v1"] / medians["plain"],
                "registry_fetches": schemas.fetches}  # fmt: skip

    result = asyncio.run(run())
    m = result["medians"]
    print(f"plain Avro          {m['plain']:10,.0f} records/s ({1e6 / m['plain']:.1f} us)")
    print(f"registry, all v1    {m['registry_v1']:10,.0f} records/s ({1e6 / m['registry_v1']:.1f} us)"
          f"  ratio {result['ratio_v1']:.3f}")  # fmt: skip
    print(f"registry, half v2   {m['registry']:10,.0f} records/s ({1e6 / m['registry']:.1f} us)"
          f"  ratio {result['ratio']:.3f} (v2 is resolved to the reader schema)")  # fmt: skip
    print(
        f"requests to the registry: {result['registry_fetches']} for {2 * args.records * args.rounds:,} framed "
        "records decoded (one per schema id)"
    )
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
