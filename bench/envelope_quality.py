"""Adaptive mode with nothing configured, on fleets of our own (``tests/corpus.py``
``cohort_fleet``): ten step kinds over three providers, each (kind, provider) first
re-run benignly ``--warm`` times, then ``--mixed`` more re-runs of which a share are
regressions (with benign noise). Two input partitions, as the steps' keys spread them.

For each seed: the false alerts among benign re-runs judged after the warm-up, the
regressions caught, and beside them the same pairs under exact equality.

    python bench/envelope_quality.py [--seeds 1,4,21] [--warm 70] [--mixed 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.corpus import REGRESSIONS, cohort_fleet  # noqa: E402

from replaywatch.compare import CompareConfig, Verdict, compare_attempts  # noqa: E402
from replaywatch.core.projection import StepProjection, apply  # noqa: E402
from replaywatch.envelope.adaptive import ADAPTIVE, Adaptive  # noqa: E402
from replaywatch.envelope.model import EnvelopeSettings  # noqa: E402


def measure(seed: int, warm: int, mixed: int) -> dict[str, Any]:
    fleet = cohort_fleet(kinds=10, warm=warm, mixed=mixed, seed=seed)
    adaptive = Adaptive({}, EnvelopeSettings())
    config = replace(CompareConfig(), adaptive=True)
    offsets: dict[int, int] = {}
    benign = false = regressions = caught = exact_false = exact_benign = 0
    for r in fleet:
        part = zlib.crc32(r.baseline.step_id.encode()) % 2
        proj = StepProjection.empty(r.baseline.run_id, r.baseline.step_id)
        said = []
        for a in (r.baseline, r.current):
            offset = offsets.get(part, 0)
            offsets[part] = offset + 1
            proj, cs = apply(proj, a, config, adaptive.of((part, offset), a))
            said += cs
        (c,) = said
        alert = c.verdict is not Verdict.WITHIN_TOLERANCE
        if r.label in REGRESSIONS:
            regressions += 1
            caught += alert
        elif c.regime == ADAPTIVE:
            benign += 1
            false += alert
            exact_benign += 1
            exact_false += (
                compare_attempts(r.baseline, r.current, CompareConfig()).verdict is not Verdict.WITHIN_TOLERANCE
            )
    return {"seed": seed, "benign_after_warmup": benign, "false_alerts": false, "regressions": regressions,
            "caught": caught, "exact_false_alerts": exact_false, "exact_benign": exact_benign}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="1,4,21")
    ap.add_argument("--warm", type=int, default=70)
    ap.add_argument("--mixed", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = [measure(int(s), args.warm, args.mixed) for s in args.seeds.split(",")]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print("| seed | false alerts after warm-up | regressions caught | exact: false alerts |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['false_alerts']}/{r['benign_after_warmup']} "
              f"({r['false_alerts'] / r['benign_after_warmup']:.1%}) | {r['caught']}/{r['regressions']} "
              f"({r['caught'] / r['regressions']:.1%}) | {r['exact_false_alerts']}/{r['exact_benign']} "
              f"({r['exact_false_alerts'] / r['exact_benign']:.1%}) |")  # fmt: skip


if __name__ == "__main__":
    main()
