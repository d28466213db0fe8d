"""Each throughput lever of the per-event path on its own, the way before beside the way
now, in one process, alternating (a, b, a, b, ...; the best of each kept), so that the
machine's drift between runs cannot pass for an effect:

- ``strip``: the snapshot's usage keys and ignore rules in one walk
  (``structure.strip_and_drop``) against the two walks one after the other;
- ``ids``: a comparison id hashed straight to text (``ids.uuid5_text``) against
  ``str(uuid.uuid5(...))``;
- ``budget``: a record's CPU budget that reads the clock only at its first check,
  against one that reads it when the record starts (the cost saved is that read);
- ``publish``: a transaction's events as one batch per output partition against a
  ``send`` per event, through a real transactional producer (``REPLAYWATCH_KAFKA_BOOTSTRAP``;
  ``make bench`` starts the devstack's), CPU of this process per event;
- ``native-*``: each piece of the native per-record path against its Python reference
  (``REPLAYWATCH_NATIVE=off``): the input record's Avro decode, the snapshot walk, the
  tool events' ignore walk, the output event's Avro encode.

The Python path's own levers (``strip``, ``ids``, ``budget``) are measured with the
native path off, as they ran before it.

Snapshots are the e2e bench's fleet (about 1 KB each), the ignore rules the worked
policy's (``docs/policies/llm-steps.toml``), the usage preset ``all``.

Usage: python bench/levers.py [--rounds 5] [--events 20000] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import tomllib
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from replaywatch import codec, demo, native
from replaywatch.compare import engine, ignore, structure
from replaywatch.compare.ids import uuid5_text
from replaywatch.compare.usage import PRESETS
from replaywatch.config import Settings
from replaywatch.stream.partitioning import KeyPartitions
from replaywatch.stream.publisher import PartitionBatches

ROOT = Path(__file__).resolve().parents[1]
NS = uuid.UUID("5b1c2d3e-8f4a-4b6c-9d0e-7a1b2c3d4e5f")


def best_of(rounds: int, a: Callable[[], int], b: Callable[[], int]) -> tuple[float, float]:
    """(a, b): the least CPU seconds per item of each over ``rounds`` alternating rounds."""
    got: dict[str, list[float]] = {"a": [], "b": []}
    for _ in range(rounds):
        for name, fn in (("a", a), ("b", b)):
            t0 = time.process_time()
            n = fn()
            got[name].append((time.process_time() - t0) / n)
    return min(got["a"]), min(got["b"])


def native_levers(rounds: int) -> dict[str, tuple[float, float]]:
    """(Python, native) per item for each piece of the native path, on the bench's fleet
    under the worked policy."""
    events = demo.synthetic_fleet(demo.FleetSpec(runs=300, seed=5))
    values = [codec.encode_attempt(e) for e in events]
    config = Settings(policy_file=ROOT / "docs/policies/llm-steps.toml").compare_config()
    attempts = [codec.decode_attempt(v) for v in values]
    snapshots = [a.output_snapshot for a in attempts if a.output_snapshot is not None]
    tools = [a.tool_events for a in attempts if isinstance(a.tool_events, list)]
    baselines: dict[tuple[str, str], engine.PreparedAttempt] = {}
    records = []
    for i, a in enumerate(attempts):
        prepared = engine.prepare(a.number, a.output_snapshot, a.tool_events, config, a.latency_ms)
        first = baselines.setdefault((a.run_id, a.step_id), prepared)
        if first is not prepared:
            c = engine.compare(a.run_id, a.step_id, first, prepared, config)
            at = a.occurred_at_ms
            records.append(codec.comparison_record(c, diff_uri=None, source=("bench", 0, i), occurred_at_ms=at,
                                                   detected_at_ms=at))  # fmt: skip
    usage, output, tool_rules = config.usage, config.ignore.output, config.ignore.tools

    def decode() -> int:
        for v in values:
            codec.read_attempt(v)
        return len(values)

    def walk() -> int:
        for s in snapshots:
            structure.strip_and_drop(s, usage, output)
        return len(snapshots)

    def tool_walk() -> int:
        for t in tools:
            structure.drop_ignored(t, tool_rules)
        return len(tools)

    def encode() -> int:
        for r in records:
            codec.encode_comparison_body(r)
        return len(records)

    def both(fn: Callable[[], int]) -> tuple[Callable[[], int], Callable[[], int]]:
        def python() -> int:
            native.use("off")
            try:
                return fn()
            finally:
                native.use("on")

        return python, fn

    native.use("on")
    return {f"native-{name}": best_of(rounds, *both(fn))
            for name, fn in (("decode", decode), ("walk", walk), ("tools", tool_walk), ("encode", encode))}  # fmt: skip


def pure_levers(rounds: int) -> dict[str, tuple[float, float]]:
    native.use("off")  # the Python path's levers, as they ran before the native path
    events = demo.synthetic_fleet(demo.FleetSpec(runs=300, seed=5))
    snapshots = [orjson.loads(e["output_snapshot"]) for e in events if e["output_snapshot"]]
    policy = tomllib.loads((ROOT / "docs/policies/llm-steps.toml").read_text())
    patterns = ignore.IgnoreRules.compile(policy["default"]["ignore"]).output
    usage = PRESETS["all"]

    def two_walks() -> int:
        for s in snapshots:
            structure.drop_ignored(structure.strip_usage(s, usage)[0], patterns)
        return len(snapshots)

    def one_walk() -> int:
        for s in snapshots:
            structure.strip_and_drop(s, usage, patterns)
        return len(snapshots)

    names = [f"run-{i}\x1fstep-{i % 4}\x1f1\x1f{2 + i % 3}" for i in range(20_000)]

    def stdlib_ids() -> int:
        for name in names:
            str(uuid.uuid5(NS, name))
        return len(names)

    def text_ids() -> int:
        for name in names:
            uuid5_text(NS, name)
        return len(names)

    def clock_read() -> int:
        for _ in range(100_000):
            time.thread_time()
        return 100_000

    def no_read() -> int:
        for _ in range(100_000):
            pass
        return 100_000

    try:
        return {"strip": best_of(rounds, two_walks, one_walk), "ids": best_of(rounds, stdlib_ids, text_ids),
                "budget": best_of(rounds, clock_read, no_read)}  # fmt: skip
    finally:
        native.use("auto")


async def publish_lever(rounds: int, events: int) -> tuple[float, float]:
    """CPU of this process per event: a ``send`` per event, or a batch per partition."""
    bootstrap = os.environ["REPLAYWATCH_KAFKA_BOOTSTRAP"]
    topic = f"bench-levers-{uuid.uuid4().hex[:6]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 8, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=f"{topic}.tx", acks="all", linger_ms=5)
    await producer.start()
    rows = [(f"run-{i // 12}".encode(), os.urandom(600), [("verdict", b"drift")]) for i in range(events)]
    per = 500

    async def by_send() -> None:
        for start in range(0, len(rows), per):
            async with producer.transaction():
                for key, value, headers in rows[start : start + per]:
                    await producer.send(topic, value, key=key, headers=headers)

    async def by_batch() -> None:  # the publisher's own batching
        keys = KeyPartitions(sorted(await producer.partitions_for(topic)))
        for start in range(0, len(rows), per):
            async with producer.transaction():
                batches = PartitionBatches(producer, topic, keys)
                for key, value, headers in rows[start : start + per]:
                    await batches.add(key, value, headers)
                await batches.send()

    got: dict[str, list[float]] = {"send": [], "batch": []}
    try:
        for _ in range(rounds):
            for name, fn in (("send", by_send), ("batch", by_batch)):
                t0 = time.process_time()
                await fn()
                got[name].append((time.process_time() - t0) / len(rows))
    finally:
        await producer.stop()
    return min(got["send"]), min(got["batch"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results = pure_levers(args.rounds) | native_levers(args.rounds)
    if os.environ.get("REPLAYWATCH_KAFKA_BOOTSTRAP"):
        results["publish"] = asyncio.run(publish_lever(args.rounds, args.events))
    labels = {"strip": "usage keys and ignore rules: two walks -> one (per snapshot)",
              "ids": "comparison id: uuid.uuid5 -> hashed straight to text (per id)",
              "budget": "record budget: a clock read at the start -> none before the first check (per record)",
              "publish": "publish: a send per event -> a batch per output partition (per event)",
              "native-decode": "native: the input record's Avro decode, fastavro -> native (per record)",
              "native-walk": "native: the snapshot walk, Python -> native (per snapshot)",
              "native-tools": "native: the tool events' ignore walk, Python -> native (per tool events)",
              "native-encode": "native: the output event's Avro encode, fastavro -> native (per event)"}  # fmt: skip
    print("| lever | before µs | now µs | saved µs |\n|---|---|---|---|")
    for key, (before, now) in results.items():
        print(f"| {labels[key]} | {before * 1e6:.2f} | {now * 1e6:.2f} | {(before - now) * 1e6:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({k: {"before_s": a, "now_s": b} for k, (a, b) in results.items()}, indent=2))


if __name__ == "__main__":
    main()
