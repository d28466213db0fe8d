"""Comparisons per second for a pair of ~1 KB snapshots with ~300 B of tool events.

Three figures, one process, one core:
- stream:  prepare(current) + compare(prepared baseline, prepared current). This is the
           engine's work per event in the pipeline, where the baseline is prepared once.
- pair:    both attempts prepared from scratch, then compared (``compare_attempts``).
- floor:   a sorted orjson dump of both documents and a byte compare (no rules).

``--policies`` turns policies on: a policy file of five rules (the attempt
matches the last, which picks the ``all`` usage preset and two ignore rules), each
event's policy selected by (provider, provider version, step) before it is compared.

``--against REV`` measures the engine of git revision REV too, in the same run:
rounds of this tree and REV alternate (each a fresh process on the same core), and the
medians and their ratio are printed. ``make bench-compare`` runs
``--policies --against 124457f`` (the engine before comparators per path).

Usage: python bench/compare_bench.py [--seconds 3] [--policies] [--against REV [--rounds 3]] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

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


POLICIES = {
    "default": {"tokens_tolerance": 0.01, "cost_tolerance": 0.01},
    "rules": [
        {"name": "anthropic", "provider": "anthropic", "usage": "anthropic", "tokens_tolerance": 0.1},
        {"name": "openai-4o", "provider": "openai", "provider_version": "gpt-4o*", "usage": "openai"},
        {"name": "gen-ai", "provider": "vertex", "usage": "gen_ai"},
        {"name": "retrieval", "step": "retrieve-*", "ignore": ["**.clock"]},
        {"name": "agents", "provider": "in-house", "provider_version": "agent-*", "step": "step-*", "usage": "all",
         "ignore": ["output_snapshot.meta.request_id", "tool_events[*].trace.span_id"]},
    ],
}  # fmt: skip


AGENTS_IGNORE = POLICIES["rules"][-1]["ignore"]  # type: ignore[index]


def measure(seconds: float, policies: bool) -> dict[str, float]:
    """Without policies: the same tolerances and ignore rules as the policy that
    matches, set directly (what an engine without policies runs)."""
    config = CompareConfig.build(0.01, 0.01, AGENTS_IGNORE)
    select = None
    if policies:
        from replaywatch.compare import policy

        config = policy.parse(POLICIES, config)
        select = config.select
    rec_snap, cur_snap = snapshot(600, 0.0021), snapshot(603, 0.00211)
    rec = Attempt("run-1", "step-1", 1, rec_snap, tool_events=TOOLS)
    cur = Attempt("run-1", "step-1", 2, cur_snap, tool_events=json.loads(json.dumps(TOOLS)))
    base = prepare(rec.number, rec.output_snapshot, rec.tool_events, config)
    if select is not None:
        chosen = select("in-house", "agent-7", "step-1")
        assert chosen.policy == "agents", chosen.policy
        base = prepare(rec.number, rec.output_snapshot, rec.tool_events, chosen)
        assert compare(
            "run-1", "step-1", base, prepare(2, cur_snap, cur.tool_events, chosen), chosen
        ).verdict.value == ("within_tolerance")
    else:
        assert compare_attempts(rec, cur, config).verdict.value == "within_tolerance"

    def stream() -> object:
        c = config if select is None else select("in-house", "agent-7", "step-1")
        p = prepare(cur.number, cur.output_snapshot, cur.tool_events, c)
        return compare("run-1", "step-1", base, p, c)

    def pair() -> object:
        c = config if select is None else select("in-house", "agent-7", "step-1")
        return compare("run-1", "step-1", prepare(rec.number, rec.output_snapshot, rec.tool_events, c),
                       prepare(cur.number, cur.output_snapshot, cur.tool_events, c), c)  # fmt: skip

    opt = orjson.OPT_SORT_KEYS

    def floor() -> object:
        return orjson.dumps(rec_snap, option=opt) == orjson.dumps(cur_snap, option=opt) and orjson.dumps(
            TOOLS, option=opt
        ) == orjson.dumps(cur.tool_events, option=opt)

    return {name: rate(fn, seconds) for name, fn in (("stream", stream), ("pair", pair), ("floor", floor))}


def _round(src: Path | None, seconds: float, policies: bool) -> dict[str, float]:
    """One measurement in a fresh process on CPU 0: this tree's engine, or ``src``'s."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    cmd = [sys.executable, __file__, "--worker", "--seconds", str(seconds)] + (["--policies"] if policies else [])
    if hasattr(os, "sched_setaffinity"):
        cmd = ["taskset", "-c", "0", *cmd]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.splitlines()[-1])  # type: ignore[no-any-return]


def against(rev: str, seconds: float, rounds: int, policies: bool) -> dict[str, object]:
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", str(root), "archive", rev, "src"], check=True, capture_output=True
        ).stdout
        tar_path = Path(tmp) / "src.tar"
        tar_path.write_bytes(archive)
        with tarfile.open(tar_path) as tar:
            tar.extractall(tmp, filter="data")
        old_src = Path(tmp) / "src"
        now: list[dict[str, float]] = []
        then: list[dict[str, float]] = []
        for n in range(rounds):
            then.append(_round(old_src, seconds, False))
            now.append(_round(None, seconds, policies))
            old_rate, new_rate = then[-1]["stream"], now[-1]["stream"]
            print(f"round {n + 1}: {rev} stream {old_rate:,.0f}/s, this tree stream {new_rate:,.0f}/s", flush=True)
    med_now = {k: statistics.median(r[k] for r in now) for k in now[0]}
    med_then = {k: statistics.median(r[k] for r in then) for k in then[0]}
    return {
        "rev": rev, "policies": policies, "rounds": rounds, "seconds": seconds,
        "this_tree": med_now, "rev_medians": med_then,
        "ratio": {k: med_now[k] / med_then[k] for k in ("stream", "pair")},
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--json", dest="json_out")
    ap.add_argument("--policies", action="store_true", help="select each event's policy; presets and ignore rules on")
    ap.add_argument("--against", metavar="REV", help="also measure git revision REV, alternating, in this run")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        print(json.dumps(measure(args.seconds, args.policies)))
        return
    rec_snap = snapshot(600, 0.0021)
    print(f"snapshot {len(orjson.dumps(rec_snap))} B, tool events {len(orjson.dumps(TOOLS))} B")
    if args.against:
        result: dict[str, object] = against(args.against, args.seconds, args.rounds, args.policies)
        mine, theirs, ratio = result["this_tree"], result["rev_medians"], result["ratio"]
        for name in ("stream", "pair"):
            print(f"{name:7} this tree {mine[name]:10,.0f}/s ({1e6 / mine[name]:.2f} us)"  # type: ignore[index]
                  f"  {args.against} {theirs[name]:10,.0f}/s ({1e6 / theirs[name]:.2f} us)"  # type: ignore[index]
                  f"  ratio {ratio[name]:.3f}")  # type: ignore[index]  # fmt: skip
    else:
        results = measure(args.seconds, args.policies)
        for name, r in results.items():
            print(f"{name:7} {r:12,.0f} /s  {1e6 / r:7.2f} us each")
        print(f"stream/floor time ratio: {results['floor'] / results['stream']:.1f}x")
        result = dict(results)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
