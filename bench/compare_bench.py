"""Comparisons per second for a pair of ~1 KB snapshots with ~300 B of tool events.

Three figures, one process, one core:
- stream:  prepare(current) + compare(prepared baseline, prepared current). This is the
           engine's work per event in the pipeline, where the baseline is prepared once.
- pair:    both attempts prepared from scratch, then compared (``compare_attempts``).
- floor:   a sorted orjson dump of both documents and a byte compare (no rules).

Usage: python bench/compare_bench.py [--seconds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import orjson

from replaywatch.compare import Attempt, CompareConfig, compare, compare_attempts, prepare


def snapshot(tokens: float, cost: float) -> dict[str, object]:
    return {
        "status": "ok",
        "message": "The quarterly report was summarised into five bullet points for the reviewer.",
        "answer": {
            "bullets": [f"point {i}: revenue grew in region {i} while costs stayed flat" for i in range(5)],
            "confidence": 0.93,
            "citations": [{"doc": f"doc-{i}", "page": i, "score": 0.5 + i / 10} for i in range(4)],
        },
        "usage": {"prompt_tokens": 512, "completion_tokens": 88, "tokens": tokens, "cost_usd": cost},
        "model": {"name": "agent-large", "version": "2026-10-01", "temperature": 0.2},
        "attestation_ids": ["att-7f3a2c", "att-91bd04"],
        "meta": {"request_id": "req-0001", "region": "eu-west-1", "retries": 0},
    }


TOOLS = [
    {"kind": "tool.run", "name": "search", "payload": {"query": "quarterly revenue", "hits": 12}},
    {"kind": "tool.run", "name": "summarise", "payload": {"chars": 2048, "ok": True}},
    {"kind": "tool.result", "name": "summarise", "trace": {"span_id": "abc123"}},
]


def rate(fn: Callable[[], object], seconds: float) -> float:
    for _ in range(2000):
        fn()
    n, t0 = 0, time.perf_counter()
    while True:
        for _ in range(1000):
            fn()
        n += 1000
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return n / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()

    config = CompareConfig.build(0.01, 0.01)
    rec_snap, cur_snap = snapshot(600, 0.0021), snapshot(603, 0.00211)
    rec = Attempt("run-1", "step-1", 1, rec_snap, tool_events=TOOLS)
    cur = Attempt("run-1", "step-1", 2, cur_snap, tool_events=json.loads(json.dumps(TOOLS)))
    print(f"snapshot {len(orjson.dumps(rec_snap))} B, tool events {len(orjson.dumps(TOOLS))} B")
    base = prepare(rec.number, rec.output_snapshot, rec.tool_events, config)
    assert compare_attempts(rec, cur, config).verdict.value == "within_tolerance"

    def stream() -> object:
        p = prepare(cur.number, cur.output_snapshot, cur.tool_events, config)
        return compare("run-1", "step-1", base, p, config)

    def pair() -> object:
        return compare_attempts(rec, cur, config)

    opt = orjson.OPT_SORT_KEYS

    def floor() -> object:
        return orjson.dumps(rec_snap, option=opt) == orjson.dumps(cur_snap, option=opt) and orjson.dumps(
            TOOLS, option=opt
        ) == orjson.dumps(cur.tool_events, option=opt)

    results = {name: rate(fn, args.seconds) for name, fn in (("stream", stream), ("pair", pair), ("floor", floor))}
    for name, r in results.items():
        print(f"{name:7} {r:12,.0f} /s  {1e6 / r:7.2f} us each")
    print(f"stream/floor time ratio: {results['floor'] / results['stream']:.1f}x")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
