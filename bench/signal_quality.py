"""False alerts and regressions caught on the corpus of LLM attempt pairs
(``tests/corpus.py``), under three configurations:

- ``worked``: the README's worked policy (``docs/policies/llm-steps.toml``);
- ``exact, all kept``: the same tolerances and ignore rules, every other path exact;
- ``exact, volatile ignored``: the fields that vary between re-runs ignored too.

    python bench/signal_quality.py [--seed N] [--per-kind N] [--json] [--timing SECONDS]

``--timing``: the engine's cost per event on the corpus (the current attempt prepared
and compared with its prepared baseline, as the pipeline does), for each configuration,
rounds alternating in one process; the ratio to ``exact, all kept``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.corpus import REGRESSIONS, Pair, corpus  # noqa: E402

from replaywatch.compare import CompareConfig, compare, compare_attempts, policy, prepare  # noqa: E402
from replaywatch.compare.engine import Verdict  # noqa: E402

WORKED = ROOT / "docs" / "policies" / "llm-steps.toml"
VOLATILE = ("**.id", "**.created", "**.createTime", "**.responseId", "**.system_fingerprint", "**.request_id")
TEXT_PATHS = ("output_snapshot.choices[*].message.content", "output_snapshot.content[*].text",
              "output_snapshot.candidates[*].content.parts[*].text")  # fmt: skip


def configurations() -> dict[str, CompareConfig]:
    return {
        "worked": policy.load(WORKED, CompareConfig()),
        "exact, all kept": CompareConfig.build(0.05, 0.10, VOLATILE, usage="all"),
        "exact, volatile ignored": CompareConfig.build(
            0.05, 0.10, (*VOLATILE, *TEXT_PATHS, "**.confidence", "**.sources"), usage="all"
        ),
    }


def measure(pairs: list[Pair], config: CompareConfig) -> dict[str, Any]:
    alerts: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for p in pairs:
        kinds[p.kind] += 1
        if compare_attempts(p.baseline, p.current, config).verdict is not Verdict.WITHIN_TOLERANCE:
            alerts[p.kind] += 1
    benign = sum(n for k, n in kinds.items() if k not in REGRESSIONS)
    regressions = sum(n for k, n in kinds.items() if k in REGRESSIONS)
    false_alerts = sum(alerts[k] for k in kinds if k not in REGRESSIONS)
    caught = sum(alerts[k] for k in kinds if k in REGRESSIONS)
    return {
        "benign": benign, "false_alerts": false_alerts, "false_alert_rate": false_alerts / benign,
        "regressions": regressions, "caught": caught, "recall": caught / regressions,
        "false_alerts_by_kind": {k: alerts[k] for k in kinds if k not in REGRESSIONS and alerts[k]},
        "missed_by_kind": {k: kinds[k] - alerts[k] for k in kinds if k in REGRESSIONS and kinds[k] > alerts[k]},
    }  # fmt: skip


def cost_per_event(pairs: list[Pair], config: CompareConfig, seconds: float) -> float:
    """µs of CPU per event: prepare the current attempt, compare it with its prepared
    baseline, over the corpus, for about ``seconds``."""
    selected = [(p, config.select(p.current.provider, p.current.provider_version, p.current.step_id)) for p in pairs]
    bases = [prepare(p.baseline.number, p.baseline.output_snapshot, p.baseline.tool_events, c) for p, c in selected]
    embedders = {id(m.embed): m.embed for _, c in selected for m in c.comparators.comparators if m.embed is not None}
    done, started = 0, time.process_time()
    while time.process_time() - started < seconds:
        for embed in embedders.values():  # texts are new in a live stream: nothing embedded yet
            embed.cache_clear()  # type: ignore[attr-defined]
        for (p, c), base in zip(selected, bases, strict=True):
            now = prepare(p.current.number, p.current.output_snapshot, p.current.tool_events, c)
            compare(p.current.run_id, p.current.step_id, base, now, c)
        done += len(pairs)
    return (time.process_time() - started) / done * 1e6


def timing(pairs: list[Pair], seconds: float, rounds: int = 5) -> dict[str, float]:
    """Median µs per event of each configuration, rounds alternating."""
    configs = configurations()
    samples: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(rounds):
        for name, config in configs.items():
            samples[name].append(cost_per_event(pairs, config, seconds / rounds))
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--per-kind", type=int, default=12)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--timing", type=float, default=0.0, help="seconds of timing per configuration")
    args = parser.parse_args()
    pairs = corpus(args.seed, args.per_kind)
    results = {name: measure(pairs, config) for name, config in configurations().items()}
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{len(pairs)} pairs (seed {args.seed}), {args.per_kind} of each kind\n")
    print("| configuration | false alerts on benign re-runs | regressions caught |")
    print("|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['false_alerts']}/{r['benign']} ({r['false_alert_rate']:.1%}) "
              f"| {r['caught']}/{r['regressions']} ({r['recall']:.1%}) |")  # fmt: skip
    for name, r in results.items():
        if r["false_alerts_by_kind"] or r["missed_by_kind"]:
            print(f"\n{name}: false alerts {r['false_alerts_by_kind']}, missed {r['missed_by_kind']}")
    if args.timing:
        costs = timing(pairs, args.timing)
        base = costs["exact, all kept"]
        print("\n| configuration | µs of CPU per event | ratio |\n|---|---|---|")
        for name, us in costs.items():
            print(f"| {name} | {us:.1f} | {us / base:.2f} |")


if __name__ == "__main__":
    main()
