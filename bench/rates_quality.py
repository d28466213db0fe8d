"""How the drift-rate alerts behave at the default settings, on simulated fleets (no
services): false alerts under the null, and how soon a doubled rate is caught.

    python bench/rates_quality.py [--seeds 20] [--json out.json]

The fleets are ``tests/rates_sim.py``'s: cohorts with their own volume (comparisons per
5-minute window, Poisson) and drift rate; the judgment is the service's own
(``rates.alerts.judge``)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.rates_sim import Change, detection_delay, fleet  # noqa: E402


def null(seeds: int) -> dict[str, float]:
    windows = false = 0
    for seed in range(seeds):
        o = fleet(seed, cohorts=20, windows=288)
        windows += o.cohort_windows
        false += o.false_alerts
    return {"cohort_windows": windows, "false_alerts": false, "per_1000": 1000 * false / windows}


def delays(seeds: int) -> list[dict[str, object]]:
    out = []
    for volume in (50, 100, 200, 400):
        for rate in (0.05, 0.1, 0.2):
            found = []
            for seed in range(seeds):
                change = Change(cohort=0, at=60, factor=2.0, until=None)
                o = fleet(1000 + seed, cohorts=4, windows=90, change=change, volume=(volume, volume + 1),
                          rates=(rate, rate + 1e-9))  # fmt: skip
                found.append(detection_delay(o, change))
            caught = [d for d in found if d is not None]
            out.append({
                "comparisons_per_window": volume, "base_rate": rate,
                "caught_within_2_windows": sum(d <= 1 for d in caught) / len(found),
                "caught_within_6_windows": sum(d <= 5 for d in caught) / len(found),
                "median_delay_windows": statistics.median(caught) if caught else None,
            })  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    started = time.perf_counter()
    result = {"null": null(args.seeds), "doubled": delays(args.seeds)}
    result["seconds"] = round(time.perf_counter() - started, 1)
    n = result["null"]
    print(f"null: {n['false_alerts']} false alerts in {n['cohort_windows']} cohort-windows "
          f"({n['per_1000']:.2f} per 1,000)")  # fmt: skip
    print("doubled rate: comparisons/window, base rate -> caught within 2 windows, within 6, median delay")
    for d in result["doubled"]:
        print(f"  {d['comparisons_per_window']:>4} {d['base_rate']:>5.0%} -> {d['caught_within_2_windows']:>5.0%} "
              f"{d['caught_within_6_windows']:>5.0%}  {d['median_delay_windows']}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
