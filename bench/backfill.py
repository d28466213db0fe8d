"""Replay benchmark: backfill, dry run, re-scoring and rebuild over N recorded events
(default 200,000), beside the live consumer's rate over the same topic, in one run.

1. N synthetic attempt events (as in bench/e2e.py: ~1 KB snapshots, 8 partitions) are
   produced up front to one input topic.
2. live: `replaywatch run` from empty state until every expected comparison is out.
3. backfill: `replaywatch backfill --json` into a fresh schema (every comparison is
   new: all are published); then the same command again (nothing to publish).
4. dry run, re-scoring (a report under a 5% token tolerance) and rebuild (of the live
   schema) over the same records.

Each replay is a subprocess: wall seconds, records/s, CPU seconds per 1,000 records
(the process's own, from rusage). Results: bench/results/backfill-<time>.{json,md}.
Usage: python bench/backfill.py [--events N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from e2e import Bench, fleet

from replaywatch import codec, demo
from replaywatch.config import load_settings
from replaywatch.devstack import Stack
from replaywatch.devstack.stack import default_dir

ROOT = Path(__file__).resolve().parents[1]


def replay(name: str, argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run one replay command to its end: its JSON summary, wall seconds and CPU."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(f"/tmp/bench-replay-{name}.log", "wb") as log:
        done = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=log, timeout=1800)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{name} exited with {done.returncode}; see /tmp/bench-replay-{name}.log")
    summary = json.loads(done.stdout.splitlines()[-1])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"summary": {k: v for k, v in summary.items() if k not in ("steps", "events")}, "wall_s": wall, "cpu_s": cpu}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=8)
    args = parser.parse_args()

    stack_dir = default_dir()
    env = {**os.environ}
    if "REPLAYWATCH_KAFKA_BOOTSTRAP" not in env:
        env |= Stack(stack_dir).env()
    b = Bench(env, args.partitions, stack_dir)
    tag = uuid.uuid4().hex[:8]
    events = fleet(args.events, seed=5)
    config = load_settings().compare_config()
    expected = demo.expected_comparisons(events, config)
    live_env = b.system_env(f"{tag}live")
    in_topic = live_env["REPLAYWATCH_INPUT_TOPIC"]
    await b.create(in_topic, live_env["REPLAYWATCH_OUTPUT_TOPIC"], live_env["REPLAYWATCH_DLQ_TOPIC"])
    produce_s = await b.produce(in_topic, [(e["run_id"].encode(), codec.encode_attempt(e)) for e in events])
    print(f"produced {len(events):,} events in {produce_s:.1f}s; {len(expected):,} comparisons expected", flush=True)

    results: dict[str, Any] = {"events": len(events), "comparisons": len(expected), "partitions": args.partitions}
    live = await b.run_system("replay-live", [sys.executable, "-m", "replaywatch", "run"], live_env,
                              live_env["REPLAYWATCH_OUTPUT_TOPIC"], len(expected))  # fmt: skip
    live["events_per_s"] = len(events) / live["seconds"]
    results["live"] = live
    print(f"live:      {live['events_per_s']:,.0f} events/s", flush=True)

    fresh = b.system_env(f"{tag}bf", REPLAYWATCH_INPUT_TOPIC=in_topic)
    await b.create(fresh["REPLAYWATCH_OUTPUT_TOPIC"], fresh["REPLAYWATCH_DLQ_TOPIC"])
    cmd = [sys.executable, "-m", "replaywatch"]
    runs = {
        "backfill": ([*cmd, "backfill", "--json"], fresh),
        "backfill_again": ([*cmd, "backfill", "--json"], fresh),
        "dry_run": ([*cmd, "backfill", "--dry-run", "--json"], fresh),
        "rescore_report": ([*cmd, "backfill", "--rescore", "--tokens-tolerance", "0.05", "--json"], live_env),
        "rebuild": ([*cmd, "rebuild", "--json"], live_env),
    }
    for name, (argv, run_env) in runs.items():
        got = replay(name, argv, run_env)
        got["records_per_s"] = len(events) / got["wall_s"]
        got["cpu_s_per_1000"] = 1000 * got["cpu_s"] / len(events)
        got["vs_live"] = got["records_per_s"] / live["events_per_s"]
        results[name] = got
        print(f"{name:<15} {got['records_per_s']:>9,.0f} records/s  {got['cpu_s_per_1000']:.3f} CPU s/1000  "
              f"{got['vs_live']:.2f}x live  {got['summary']}", flush=True)  # fmt: skip
    assert results["backfill"]["summary"]["published"] == len(expected), results["backfill"]["summary"]
    assert results["backfill_again"]["summary"]["published"] == 0, results["backfill_again"]["summary"]

    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out / f"backfill-{stamp}.json").write_text(json.dumps(results, indent=2, default=str))
    lines = ["| run | records/s | CPU s per 1,000 | vs live | published |", "|---|---:|---:|---:|---:|",
             f"| live (`replaywatch run`) | {live['events_per_s']:,.0f} | "
             f"{1000 * live['cpu_s'] / len(events):.3f} | 1.00 | {live['events_out']:,} |"]  # fmt: skip
    for name in runs:
        r = results[name]
        published = r["summary"].get("published", r["summary"].get("would_publish"))
        shown = f"{published:,}" if isinstance(published, int) else "-"
        lines.append(
            f"| {name} | {r['records_per_s']:,.0f} | {r['cpu_s_per_1000']:.3f} | {r['vs_live']:.2f} | {shown} |"
        )
    (out / f"backfill-{stamp}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
