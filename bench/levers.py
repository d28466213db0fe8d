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
- ``write``: the batch's statement with each table's rows as one JSON document
  (``commit_rows``), and with its per-event rows (steps, outbox, history) copied by
  binary COPY into staging tables first (``commit_staged``), against a parameter array
  per column (the 53 arrays of ``commit_batch``), on the real PostgreSQL
  (``REPLAYWATCH_POSTGRES_DSN``): the client's CPU and the server backend's CPU
  (``/proc``) per input event, over the batches the pipeline commits for the e2e
  bench's fleet (the COPY's tables are checked to hold what the arrays' hold); and the
  steps' stored attempts as text columns (``text``), which PostgreSQL does not parse to
  check on every insert as it does json;
- ``cache``: the step cache's bytes per step for the e2e fleet, each step's current
  attempt kept with its compared forms against without them (``engine.unprepared``);
- ``load``: a stored step read back (a cache miss) with both attempts prepared against
  the baseline alone (``store.postgres._pair_from``);
- ``native-*``: each piece of the native per-record path against its Python reference
  (``REPLAYWATCH_NATIVE=off``): the input record's Avro decode, the snapshot walk, the
  tool events' ignore walk, the output event's Avro encode; and ``native-documents``: a
  record's snapshot and tool events parsed by orjson and prepared from the Python objects
  (the native walk inside) against read and prepared natively from their text
  (``native.Document``), both with the native path on.

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
import sys
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from replaywatch import codec, demo, native
from replaywatch.compare import budget, canonical, engine, ignore, structure
from replaywatch.compare.ids import uuid5_text
from replaywatch.compare.usage import PRESETS
from replaywatch.config import Settings
from replaywatch.core.types import BatchCommit
from replaywatch.envelope import observe
from replaywatch.pipeline import Pipeline
from replaywatch.runtime.adapters import Adapters
from replaywatch.state import rule_stats
from replaywatch.state.cache import weight
from replaywatch.store.postgres import (
    PostgresStore,
    _attempt_from,
    _attempt_json,
    _pair_from,
    changed_attempt,
    commit_args,
    step_key,
)
from replaywatch.stream.partitioning import KeyPartitions
from replaywatch.stream.publisher import PartitionBatches

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.fakes import FakeConsumer, FakeDeadLetters, FakeDiffStore, FakePublisher, FakeRecord, FakeStore  # noqa: E402

POLICY = ROOT / "docs/policies/llm-steps.toml"
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
    config = Settings(policy_file=POLICY).compare_config()
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

    read = [codec.read_attempt(v) for v in values]

    def parsed_then_prepared(documents: bool) -> Callable[[], int]:
        def run() -> int:
            for rec in read:
                a = codec.parse_attempt(rec, documents=documents)
                if a.output_snapshot is not None:
                    engine.prepare(a.number, a.output_snapshot, a.tool_events, config, a.latency_ms)
            return len(read)

        return run

    native.use("on")
    return {**{f"native-{name}": best_of(rounds, *both(fn))
               for name, fn in (("decode", decode), ("walk", walk), ("tools", tool_walk), ("encode", encode))},
            "native-documents": best_of(rounds, parsed_then_prepared(False), parsed_then_prepared(True))}  # fmt: skip


@contextmanager
def _limited_by_a_generator(seconds: float | None) -> Iterator[budget.Budget]:
    """``budget.limited`` as it was: a generator made a context manager."""
    previous = budget.current
    budget.current = budget.UNLIMITED if seconds is None else budget.Budget(seconds)
    try:
        yield budget.current
    finally:
        budget.current = previous


def _counted_one_by_one(rules: dict[str, tuple[str, ...]], comparisons: list[engine.Comparison]) -> dict[Any, Any]:
    """``rule_stats.counted`` as it was: each comparison's rules counted in turn."""
    out: dict[tuple[str, str], list[int]] = {}
    for c in comparisons:
        for n, path in enumerate(rules.get(c.policy, ())):
            counts = out.setdefault((c.policy, path), [0, 0])
            counts[0] += 1
            counts[1] += c.ignored >> n & 1
    return out


def comparison_levers(rounds: int) -> dict[str, tuple[float, float]]:
    """Work per comparison done once: the rules' counts, a cohort's tool names, the
    record budget's context (before, now), over the bench's fleet's comparisons under
    the worked policy."""
    events = demo.synthetic_fleet(demo.FleetSpec(runs=300, seed=5))
    config = Settings(policy_file=POLICY).compare_config()
    firsts: dict[tuple[str, str], engine.PreparedAttempt] = {}
    comparisons: list[engine.Comparison] = []
    calls: list[bytes] = []
    for e in events:
        a = codec.decode_attempt(codec.encode_attempt(e))
        if a.output_snapshot is None:
            continue
        prepared = engine.prepare(a.number, a.output_snapshot, a.tool_events, config, a.latency_ms)
        first = firsts.setdefault((a.run_id, a.step_id), prepared)
        if first is not prepared:
            comparisons.append(engine.compare(a.run_id, a.step_id, first, prepared, config))
            if first.tool_fp is not None and first.tool_fp == prepared.tool_fp:
                calls.append(first.tool_fp)
    rules = {config.policy: config.ignore.paths} | {r.name: r.config.ignore.paths for r in config.rules}
    if _counted_one_by_one(rules, comparisons) != rule_stats.counted(rules, comparisons):
        raise AssertionError("the rules' counts differ")

    def parsed_each_time() -> int:
        for fp in calls:
            observe._by_tool(canonical.parse_json(fp))
        return len(calls)

    def names_once() -> int:
        for fp in calls:
            observe._tool_names(fp)
        return len(calls)

    def budgets(limited: Callable[[float | None], Any]) -> Callable[[], int]:
        def run() -> int:
            for _ in comparisons:
                with limited(30.0):
                    pass
            return len(comparisons)

        return run

    def one_by_one() -> int:
        _counted_one_by_one(rules, comparisons)
        return len(comparisons)

    def grouped() -> int:
        rule_stats.counted(rules, comparisons)
        return len(comparisons)

    return {"rule-counts": best_of(rounds, one_by_one, grouped),
            "tool-names": best_of(rounds, parsed_each_time, names_once),
            "budget-context": best_of(rounds, budgets(_limited_by_a_generator), budgets(budget.limited))}  # fmt: skip


def pure_levers(rounds: int) -> dict[str, tuple[float, float]]:
    native.use("off")  # the Python path's levers, as they ran before the native path
    events = demo.synthetic_fleet(demo.FleetSpec(runs=300, seed=5))
    snapshots = [orjson.loads(e["output_snapshot"]) for e in events if e["output_snapshot"]]
    policy = tomllib.loads(POLICY.read_text())
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


async def committed_batches(events: int) -> tuple[list[BatchCommit], int]:
    """The batches the pipeline commits for a fleet of about ``events`` events (about
    1,000 records each), and the number of records."""
    fleet = demo.synthetic_fleet(demo.FleetSpec(runs=events // 12, seed=5, run_every_ms=4))
    log: dict[int, list[FakeRecord]] = {p: [] for p in range(8)}
    for e in fleet:
        p = int(uuid.uuid5(NS, e["run_id"])) % 8
        log[p].append(FakeRecord(p, len(log[p]), codec.encode_attempt(e)))
    caught: list[BatchCommit] = []

    class Store(FakeStore):
        async def commit_batch(self, batch: BatchCommit) -> set[str]:
            caught.append(batch)
            return await super().commit_batch(batch)

    store = Store()
    adapters = Adapters(store, FakeDiffStore(), FakeDeadLetters(), FakePublisher(), FakeConsumer(log), 1 << 20)

    async def opened(*_: object) -> Adapters:
        return adapters

    settings = Settings(batch_size=125, policy_file=POLICY, rates=True,
                        retain_comparisons_days=0, retain_steps_days=0, retain_rule_stats_days=0)  # fmt: skip
    await Pipeline(settings, open=opened, closes_rates=False).run(asyncio.Event())
    return caught, sum(map(len, log.values()))


def cache_lever(batches: list[BatchCommit], rounds: int) -> tuple[dict[str, float], tuple[float, float]]:
    """The step cache's bytes per step (``state.cache.weight``, what bounds it) for the
    steps the pipeline commits (``committed_batches``): each step's current attempt kept
    with its compared forms (before: prepared as its baseline was) and without them (now,
    ``engine.unprepared``); and the CPU to read a stored step back (a cache miss), both
    attempts prepared (before) against the baseline alone (now, ``store.postgres._pair_from``)."""
    known = {k: p for batch in batches for k, p in batch.projections.items()}  # each step as last committed
    config = Settings(policy_file=POLICY, rates=True).compare_config()
    by_key = {c.prep_key: c for c in (config, *(rule.config for rule in config.rules))}
    now = sum(map(weight, known.values()))
    before = sum(weight(p if p.current is None or p.baseline is None
                        else p._replace(current=engine.prepared_under(p.current, by_key[p.baseline.prepared_with])))
                 for p in known.values())  # fmt: skip
    rows = [(_attempt_json(p.baseline), _attempt_json(p.current)) for p in known.values()]

    def both_prepared() -> int:
        for base, current in rows:
            _attempt_from(base, config), _attempt_from(current, config)
        return len(rows)

    def baseline_prepared() -> int:
        for base, current in rows:
            _pair_from(base, current, config)
        return len(rows)

    memory = {"steps": len(known), "before_bytes": before / len(known), "now_bytes": now / len(known)}
    return memory, best_of(rounds, both_prepared, baseline_prepared)


COMMIT_CALL = """{q}.commit_batch(
        p_group, p_topic, o_partition, o_expected, o_next,
        s_key, s_run, s_step, s_base_attempt, s_current_attempt, s_max, s_status, s_verdict, s_comparisons,
        s_base, s_current, s_expected, s_version,
        e_partition, e_offset, e_event, e_key, e_value, e_verdict, e_trace,
        c_run, c_step, c_base, c_current, c_token, c_cost, c_kind, c_sha, c_uri, c_detected, c_origin,
        c_supersedes, c_settings, n_partition, n_cohort, n_state, n_actions_seen,
        e_headers, c_cohort, c_policy, c_occurred, c_paths,
        w_cohort, w_policy, w_start, w_counts, k_partition, k_state)"""
"""The call of ``commit_batch`` that the tried forms of the write end with, once their
rows are read back into its column arrays (``{call}`` in ``COMMIT_ROWS`` and ``STAGING``)."""


COMMIT_ROWS = """
CREATE OR REPLACE FUNCTION {q}.commit_rows(
    p_group text, p_topic text,
    o_partition int[], o_expected bigint[], o_next bigint[],
    s_key bytea[], s_base json[], s_current json[], s_rows json,
    e_key bytea[], e_value bytea[], e_rows json,
    c_token double precision[], c_cost double precision[], c_rows json,
    n_partition int[], n_cohort text[], n_state text[], n_actions_seen bigint,
    w_cohort text[], w_policy text[], w_start bigint[], w_counts text[], k_partition int[], k_state text[]
) RETURNS uuid[] LANGUAGE plpgsql AS $$
DECLARE
    s_run text[]; s_step text[]; s_base_attempt int[]; s_current_attempt int[]; s_max int[];
    s_status text[]; s_verdict text[]; s_comparisons int[]; s_expected bigint[]; s_version bigint[];
    e_partition int[]; e_offset bigint[]; e_event uuid[]; e_verdict text[]; e_trace text[]; e_headers text[];
    c_run text[]; c_step text[]; c_base int[]; c_current int[]; c_kind text[]; c_sha text[]; c_uri text[];
    c_detected timestamptz[]; c_origin uuid[]; c_supersedes uuid[]; c_settings text[]; c_cohort text[];
    c_policy text[]; c_occurred timestamptz[]; c_paths text[];
BEGIN
    SELECT array_agg(r ORDER BY o), array_agg(st ORDER BY o), array_agg(ba ORDER BY o), array_agg(ca ORDER BY o),
           array_agg(m ORDER BY o), array_agg(ls ORDER BY o), array_agg(lv ORDER BY o), array_agg(c ORDER BY o),
           array_agg(ev ORDER BY o), array_agg(nv ORDER BY o)
    INTO s_run, s_step, s_base_attempt, s_current_attempt, s_max, s_status, s_verdict, s_comparisons,
         s_expected, s_version
    FROM ROWS FROM (json_to_recordset(s_rows) AS (run_id text, step_id text, base int, current int, max int,
                    status text, verdict text, comparisons int, expected bigint, version bigint))
         WITH ORDINALITY AS t(r, st, ba, ca, m, ls, lv, c, ev, nv, o);
    SELECT array_agg(pa ORDER BY o), array_agg(so ORDER BY o), array_agg(ev ORDER BY o), array_agg(ve ORDER BY o),
           array_agg(tr ORDER BY o), array_agg(hd ORDER BY o)
    INTO e_partition, e_offset, e_event, e_verdict, e_trace, e_headers
    FROM ROWS FROM (json_to_recordset(e_rows) AS (partition int, source_offset bigint, event_id uuid,
                    verdict text, trace text, headers text))
         WITH ORDINALITY AS t(pa, so, ev, ve, tr, hd, o);
    SELECT array_agg(r ORDER BY o), array_agg(st ORDER BY o), array_agg(b ORDER BY o), array_agg(cu ORDER BY o),
           array_agg(k ORDER BY o), array_agg(sh ORDER BY o), array_agg(u ORDER BY o),
           array_agg(timestamptz 'epoch' + d * interval '1 millisecond' ORDER BY o), array_agg(og ORDER BY o),
           array_agg(sup ORDER BY o), array_agg(fp ORDER BY o), array_agg(ch ORDER BY o), array_agg(po ORDER BY o),
           array_agg(timestamptz 'epoch' + oc * interval '1 millisecond' ORDER BY o), array_agg(pt ORDER BY o)
    INTO c_run, c_step, c_base, c_current, c_kind, c_sha, c_uri, c_detected, c_origin, c_supersedes, c_settings,
         c_cohort, c_policy, c_occurred, c_paths
    FROM ROWS FROM (json_to_recordset(c_rows) AS (run_id text, step_id text, baseline_attempt int,
                    current_attempt int, diff_kind text, diff_sha256 text, diff_uri text, detected_at_ms bigint,
                    origin uuid, supersedes uuid, settings_fingerprint text, cohort text, policy text,
                    occurred_at_ms bigint, paths text))
         WITH ORDINALITY AS t(r, st, b, cu, k, sh, u, d, og, sup, fp, ch, po, oc, pt, o);
    RETURN {call};
END;
$$;
"""
"""The write tried: ``commit_batch`` called with each table's rows as one JSON document,
read back into its column arrays on the server (``{q}``: the schema)."""


def _bytes_apart(value: object) -> None:
    if isinstance(value, bytes):  # an outbox row's key and value: arrays of their own
        return None
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_args(group_id: str, topic: str, batch: BatchCommit) -> list[object]:
    """The arguments of ``COMMIT_ROWS``: the rows of each table as one JSON document
    (orjson writes the outbox and history rows as they are), the bytes, the stored
    attempts and the usage deltas (which may be infinite) as arrays."""
    offs = sorted(batch.offsets.items())
    projs = list(batch.projections.values())
    before = [batch.previous.get((p.run_id, p.step_id)) for p in projs]

    steps = [
        {"run_id": p.run_id, "step_id": p.step_id, "base": p.baseline.number if p.baseline else None,
         "current": p.current.number if p.current else None, "max": p.max_attempt, "status": p.last_status,
         "verdict": p.last_verdict.value if p.last_verdict else None, "comparisons": p.comparisons,
         "expected": b.version if b else 0, "version": p.version}
        for p, b in zip(projs, before, strict=True)
    ]  # fmt: skip
    comps, windows = batch.comparisons, sorted(batch.windows)
    return [
        group_id, topic, [p for p, _ in offs], [o[0] for _, o in offs], [o[1] for _, o in offs],
        [step_key((p.run_id, p.step_id)) for p in projs],
        [changed_attempt(p.baseline, b.baseline if b else None) for p, b in zip(projs, before, strict=True)],
        [changed_attempt(p.current, b.current if b else None) for p, b in zip(projs, before, strict=True)],
        orjson.dumps(steps).decode(), [o.key for o in batch.outbox], [o.value for o in batch.outbox],
        orjson.dumps(batch.outbox, default=_bytes_apart).decode(),
        [c.token_delta for c in comps], [c.cost_delta for c in comps], orjson.dumps(comps).decode(),
        [p for p, _ in batch.envelopes], [c for _, c in batch.envelopes], list(batch.envelopes.values()),
        batch.actions_seen, [k[0] for k in windows], [k[1] for k in windows], [k[2] for k in windows],
        ["{" + ",".join(map(str, batch.windows[k])) + "}" for k in windows],
        sorted(batch.clocks), [batch.clocks[p] for p in sorted(batch.clocks)],
    ]  # fmt: skip


STAGING = """
CREATE TEMP TABLE IF NOT EXISTS rw_steps (
    o bigint GENERATED ALWAYS AS IDENTITY, k bytea, r text, st text, ba int, ca int, m int, ls text, lv text,
    c int, b json, cu json, ev bigint, nv bigint) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS rw_outbox (
    o bigint GENERATED ALWAYS AS IDENTITY, pa int, so bigint, ev uuid, ke bytea, va bytea, ve text, tr text,
    hd text) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS rw_comps (
    o bigint GENERATED ALWAYS AS IDENTITY, r text, st text, b int, cu int, tk double precision,
    co double precision, k text, sh text, u text, d timestamptz, og uuid, sup uuid, fp text, ch text, po text,
    oc timestamptz, pt text) ON COMMIT DELETE ROWS;
CREATE OR REPLACE FUNCTION {q}.commit_staged(
    p_group text, p_topic text, o_partition int[], o_expected bigint[], o_next bigint[],
    n_partition int[], n_cohort text[], n_state text[], n_actions_seen bigint,
    w_cohort text[], w_policy text[], w_start bigint[], w_counts text[], k_partition int[], k_state text[]
) RETURNS uuid[] LANGUAGE plpgsql AS $$
DECLARE
    s_key bytea[]; s_run text[]; s_step text[]; s_base_attempt int[]; s_current_attempt int[]; s_max int[];
    s_status text[]; s_verdict text[]; s_comparisons int[]; s_base json[]; s_current json[]; s_expected bigint[];
    s_version bigint[];
    e_partition int[]; e_offset bigint[]; e_event uuid[]; e_key bytea[]; e_value bytea[]; e_verdict text[];
    e_trace text[]; e_headers text[];
    c_run text[]; c_step text[]; c_base int[]; c_current int[]; c_token double precision[];
    c_cost double precision[]; c_kind text[]; c_sha text[]; c_uri text[]; c_detected timestamptz[];
    c_origin uuid[]; c_supersedes uuid[]; c_settings text[]; c_cohort text[]; c_policy text[];
    c_occurred timestamptz[]; c_paths text[];
BEGIN
    SELECT array_agg(k ORDER BY o), array_agg(r ORDER BY o), array_agg(st ORDER BY o), array_agg(ba ORDER BY o),
           array_agg(ca ORDER BY o), array_agg(m ORDER BY o), array_agg(ls ORDER BY o), array_agg(lv ORDER BY o),
           array_agg(c ORDER BY o), array_agg(b ORDER BY o), array_agg(cu ORDER BY o), array_agg(ev ORDER BY o),
           array_agg(nv ORDER BY o)
    INTO s_key, s_run, s_step, s_base_attempt, s_current_attempt, s_max, s_status, s_verdict, s_comparisons,
         s_base, s_current, s_expected, s_version
    FROM rw_steps;
    SELECT array_agg(pa ORDER BY o), array_agg(so ORDER BY o), array_agg(ev ORDER BY o), array_agg(ke ORDER BY o),
           array_agg(va ORDER BY o), array_agg(ve ORDER BY o), array_agg(tr ORDER BY o), array_agg(hd ORDER BY o)
    INTO e_partition, e_offset, e_event, e_key, e_value, e_verdict, e_trace, e_headers
    FROM rw_outbox;
    SELECT array_agg(r ORDER BY o), array_agg(st ORDER BY o), array_agg(b ORDER BY o), array_agg(cu ORDER BY o),
           array_agg(tk ORDER BY o), array_agg(co ORDER BY o), array_agg(k ORDER BY o), array_agg(sh ORDER BY o),
           array_agg(u ORDER BY o), array_agg(d ORDER BY o), array_agg(og ORDER BY o), array_agg(sup ORDER BY o),
           array_agg(fp ORDER BY o), array_agg(ch ORDER BY o), array_agg(po ORDER BY o), array_agg(oc ORDER BY o),
           array_agg(pt ORDER BY o)
    INTO c_run, c_step, c_base, c_current, c_token, c_cost, c_kind, c_sha, c_uri, c_detected, c_origin,
         c_supersedes, c_settings, c_cohort, c_policy, c_occurred, c_paths
    FROM rw_comps;
    RETURN {call};
END;
$$;
"""
"""The write tried: the batch's per-event rows (steps, outbox, history) by binary COPY
into staging tables of the session, read back into ``commit_batch``'s column arrays on
the server (``{q}``: the schema)."""

_STEP_COLUMNS = ("k", "r", "st", "ba", "ca", "m", "ls", "lv", "c", "b", "cu", "ev", "nv")
_OUTBOX_COLUMNS = ("pa", "so", "ev", "ke", "va", "ve", "tr", "hd")
_COMP_COLUMNS = ("r", "st", "b", "cu", "tk", "co", "k", "sh", "u", "d", "og", "sup", "fp", "ch", "po", "oc", "pt")


WRITTEN = """
SELECT (SELECT md5(string_agg(concat_ws('|', step_key, run_id, step_id, base_attempt, current_attempt, max_attempt,
                                       last_status, last_verdict, comparisons, base, current, version), ','
                              ORDER BY step_key)) FROM {q}.step_projection),
       (SELECT md5(string_agg(concat_ws('|', partition, source_offset, event_id, key, value, verdict, trace, headers),
                              ',' ORDER BY partition, source_offset, event_id)) FROM {q}.outbox),
       (SELECT md5(string_agg((c - 'seq')::text, ',' ORDER BY (c - 'seq')::text))
        FROM (SELECT to_jsonb(x) AS c FROM {q}.comparison AS x) AS t)
"""
"""What a variant of the write left in the tables (the times and sequence numbers it stamps aside)."""


def _when(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


async def copy_commit(conn: asyncpg.Connection, sql: str, group_id: str, topic: str, batch: BatchCommit) -> object:
    """``batch`` written as the COPY variant does it: three binary COPYs and the
    statement, in one transaction on one connection."""
    offs = sorted(batch.offsets.items())
    projs = list(batch.projections.values())
    before = [batch.previous.get((p.run_id, p.step_id)) for p in projs]
    steps = [(step_key((p.run_id, p.step_id)), p.run_id, p.step_id, p.baseline.number if p.baseline else None,
              p.current.number if p.current else None, p.max_attempt, p.last_status,
              p.last_verdict.value if p.last_verdict else None, p.comparisons,
              changed_attempt(p.baseline, b.baseline if b else None),
              changed_attempt(p.current, b.current if b else None), b.version if b else 0, p.version)
             for p, b in zip(projs, before, strict=True)]  # fmt: skip
    outbox = [(o.partition, o.source_offset, o.event_id, o.key, o.value, o.verdict, o.trace, o.headers)
              for o in batch.outbox]  # fmt: skip
    comps = [(c.run_id, c.step_id, c.baseline_attempt, c.current_attempt, c.token_delta, c.cost_delta, c.diff_kind,
              c.diff_sha256, c.diff_uri, _when(c.detected_at_ms), c.origin, c.supersedes, c.settings_fingerprint,
              c.cohort, c.policy, _when(c.occurred_at_ms), c.paths) for c in batch.comparisons]  # fmt: skip
    windows = sorted(batch.windows)
    async with conn.transaction():
        for table, rows, columns in (("rw_steps", steps, _STEP_COLUMNS), ("rw_outbox", outbox, _OUTBOX_COLUMNS),
                                     ("rw_comps", comps, _COMP_COLUMNS)):  # fmt: skip
            if rows:
                await conn.copy_records_to_table(table, records=rows, columns=columns)
        return await conn.fetchval(
            sql, group_id, topic, [p for p, _ in offs], [o[0] for _, o in offs], [o[1] for _, o in offs],
            [p for p, _ in batch.envelopes], [c for _, c in batch.envelopes], list(batch.envelopes.values()),
            batch.actions_seen, [k[0] for k in windows], [k[1] for k in windows], [k[2] for k in windows],
            ["{" + ",".join(map(str, batch.windows[k])) + "}" for k in windows],
            sorted(batch.clocks), [batch.clocks[p] for p in sorted(batch.clocks)],
        )  # fmt: skip


def _backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _migrated(dsn: str) -> str:
    schema = f"bench_levers_{uuid.uuid4().hex[:6]}"
    store = await PostgresStore.connect(dsn, schema=schema, group_id="g", topic="t")
    await store.migrate()
    await store.close()
    return f'"{schema}"'


async def _attempts_as_text(conn: asyncpg.Connection, q: str) -> None:
    """The schema's steps keep their stored attempts as text, which PostgreSQL takes as
    it comes, not as json, which it parses on every insert to check it."""
    await conn.execute(f"ALTER TABLE {q}.step_projection ALTER COLUMN base TYPE text, ALTER COLUMN current TYPE text")
    body = await conn.fetchval(f"SELECT pg_get_functiondef('{q}.commit_batch'::regproc)")
    if "s_base json[], s_current json[]" not in body:
        raise AssertionError("commit_batch no longer takes the stored attempts as json[]")
    await conn.execute(f"DROP FUNCTION {q}.commit_batch")
    await conn.execute(body.replace("s_base json[], s_current json[]", "s_base text[], s_current text[]"))


async def write_lever(rounds: int, batches: list[BatchCommit], records: int) -> dict[str, tuple[float, float]]:
    """CPU per input event of the client and of the PostgreSQL backend: the batch's
    statement as a parameter array per column, as a JSON document per table, with its
    per-event rows copied into staging tables first, or with the stored attempts as text
    rather than json, over the batches the pipeline commits for ``records`` input
    records (``committed_batches``)."""
    dsn = os.environ["REPLAYWATCH_POSTGRES_DSN"]
    q, q_text = await _migrated(dsn), await _migrated(dsn)
    conn = await asyncpg.connect(dsn)
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    for sql in (COMMIT_ROWS, STAGING):
        await conn.execute(sql.replace("{call}", COMMIT_CALL).replace("{q}", q))
    await _attempts_as_text(conn, q_text)
    tables = ("step_projection", "outbox", "comparison", "consumer_offset", "envelope", "rate_window", "rate_clock")
    args = ", ".join(f"${i}" for i in range(1, 54))

    def statement(sql: str, make: Callable[[str, str, BatchCommit], list[object]]) -> Callable[[BatchCommit], Any]:
        return lambda batch: conn.fetchval(sql, *make("g", "t", batch))

    ways = {"columns": (q, statement(f"SELECT {q}.commit_batch({args})", commit_args)),
            "rows": (q, statement(f"SELECT {q}.commit_rows(" + ", ".join(f"${i}" for i in range(1, 26)) + ")",
                                  json_args)),
            "copy": (q, lambda batch: copy_commit(conn, f"SELECT {q}.commit_staged("
                                                  + ", ".join(f"${i}" for i in range(1, 16)) + ")", "g", "t", batch)),
            "text": (q_text, statement(f"SELECT {q_text}.commit_batch({args})", commit_args))}  # fmt: skip
    said: dict[str, list[object]] = {}
    got: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    try:
        for _ in range(rounds):
            for name, (schema, write) in ways.items():
                await conn.execute("TRUNCATE " + ", ".join(f"{schema}.{t}" for t in tables))
                t0, s0 = time.process_time(), _backend_cpu(pid)
                said[name] = [await write(batch) for batch in batches]
                got[name].append(((time.process_time() - t0) / records, (_backend_cpu(pid) - s0) / records))
                said[name].append(await conn.fetchrow(WRITTEN.replace("{q}", schema)))
    finally:
        await conn.execute(f"DROP SCHEMA {q} CASCADE")
        await conn.execute(f"DROP SCHEMA {q_text} CASCADE")
        await conn.close()
    for name in ("copy", "text"):  # the statement's own result, then what the tables hold
        if said[name] != said["columns"]:
            raise AssertionError(f"the write's {name} variant did not leave what the write by arrays leaves")
    best = {name: (min(c for c, _ in v), min(s for _, s in v)) for name, v in got.items()}
    return {f"{key}-{side}": (best["columns"][i], best[name][i])
            for key, name in (("write", "rows"), ("copy", "copy"), ("text", "text"))
            for i, side in enumerate(("client", "server"))}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results = pure_levers(args.rounds) | native_levers(args.rounds) | comparison_levers(args.rounds)
    batches, records = asyncio.run(committed_batches(args.events))
    if os.environ.get("REPLAYWATCH_KAFKA_BOOTSTRAP"):
        results["publish"] = asyncio.run(publish_lever(args.rounds, args.events))
    if os.environ.get("REPLAYWATCH_POSTGRES_DSN"):
        results |= asyncio.run(write_lever(args.rounds, batches, records))
    memory, results["load"] = cache_lever(batches, args.rounds)
    labels = {"strip": "usage keys and ignore rules: two walks -> one (per snapshot)",
              "ids": "comparison id: uuid.uuid5 -> hashed straight to text (per id)",
              "budget": "record budget: a clock read at the start -> none before the first check (per record)",
              "publish": "publish: a send per event -> a batch per output partition (per event)",
              "write-client": "write: an array per column -> a JSON document per table, client (per input event)",
              "write-server": "write: an array per column -> a JSON document per table, PostgreSQL (per input event)",
              "copy-client": "write: an array per column -> rows by binary COPY, client (per input event)",
              "copy-server": "write: an array per column -> rows by binary COPY, PostgreSQL (per input event)",
              "rule-counts": "ignore rules' counts: each comparison in turn -> by (policy, rules matched) "
                             "(per comparison)",
              "tool-names": "a cohort's tool names when the calls are the same: parsed each time -> once per "
                            "distinct calls (per such comparison)",
              "budget-context": "record budget's context: a generator -> a class (per record)",
              "text-client": "write: stored attempts as json -> as text (not parsed), client (per input event)",
              "text-server": "write: stored attempts as json -> as text (not parsed), PostgreSQL (per input event)",
              "load": "a stored step read back: both attempts prepared -> the baseline alone (per step)",
              "native-decode": "native: the input record's Avro decode, fastavro -> native (per record)",
              "native-walk": "native: the snapshot walk, Python -> native (per snapshot)",
              "native-tools": "native: the tool events' ignore walk, Python -> native (per tool events)",
              "native-encode": "native: the output event's Avro encode, fastavro -> native (per event)",
              "native-documents": "native: a record's JSON parsed by orjson, then prepared -> read and prepared "
                                  "natively as documents (per input event)"}  # fmt: skip
    print("| lever | before µs | now µs | saved µs |\n|---|---|---|---|")
    for key, (before, now) in results.items():
        print(f"| {labels[key]} | {before * 1e6:.2f} | {now * 1e6:.2f} | {(before - now) * 1e6:.2f} |")
    print(f"\nThe step cache, bytes per step ({memory['steps']:,} steps): current attempt with its compared forms "
          f"{memory['before_bytes']:,.0f} -> without {memory['now_bytes']:,.0f} "
          f"({memory['now_bytes'] / memory['before_bytes'] - 1:+.1%})")  # fmt: skip
    if args.json:
        out = {k: {"before_s": a, "now_s": b} for k, (a, b) in results.items()}
        args.json.write_text(json.dumps({**out, "cache": memory}, indent=2))


if __name__ == "__main__":
    main()
