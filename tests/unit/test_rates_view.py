"""``replaywatch rates`` as a terminal shows it: a snapshot at 80 columns, the most
significant cohorts first; and the chart's SVG."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from rich.console import Console

from replaywatch.rates.alerts import CohortState
from replaywatch.store.rates_history import CohortRate, Point, by_significance
from replaywatch.views.rates import alerts_table, rates_json, rates_table, svg_chart

SNAPSHOT = Path(__file__).parent / "snapshots" / "rates_80.txt"
W = 300_000


def row(cohort: str, n: int, d: int, ref: float | None, q: float | None, status: str = "quiet",
        policy: str = "default", **more: Any) -> CohortRate:  # fmt: skip
    last = {"comparisons": n, "drifted": d, "rate": d / n, "reference_rate": ref, "q_value": q,
            "ratio": None if not ref else (d / n) / ref, "window_start_ms": 1_790_000_100_000, **more}  # fmt: skip
    return CohortRate(cohort, policy, CohortState(status=status, last=last))  # type: ignore[arg-type]


ROWS = [
    row("openai|gpt-4o-2024-08-06|summarise", 240, 31, 0.12, 0.31),
    row(
        "anthropic|claude-sonnet-4-5-20250929|summarise",
        180,
        92,
        0.21,
        2e-9,
        "open",
        reference="previous_version",
        compared_with_version="claude-sonnet-4-20250514",
    ),
    row("openai|gpt-4o-2024-08-06|classify-intent-of-a-very-long-step-kind-name", 75, 4, 0.06, 0.9),
    row("anthropic|claude-sonnet-4-5-20250929|plan", 60, 9, 0.1, 0.04, "cooling", policy="planner"),
    row("openai|gpt-4o-mini|extract", 12, 1, None, None),
]
ALERTS = [{"alert_id": "a1", "cohort": "anthropic|claude-sonnet-4-5-20250929|summarise", "policy": "default",
           "opened_ms": 1_790_000_100_000, "resolved_ms": None,
           "opened": {"cohort": "anthropic|claude-sonnet-4-5-20250929|summarise", "rate": 92 / 180,
                      "reference_rate": 0.21, "reference": "previous_version",
                      "compared_with_version": "claude-sonnet-4-20250514"}}]  # fmt: skip


def render(width: int = 80) -> str:
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, force_terminal=False)
    ordered = by_significance(ROWS)
    console.print(rates_table(ordered, width))
    console.print(alerts_table(ALERTS, width))
    return out.getvalue()


def test_rates_at_80_columns_match_the_snapshot() -> None:
    text = render()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert text == SNAPSHOT.read_text(), "\n" + text


def test_open_alerts_come_first_then_the_smallest_q_values() -> None:
    order = [(r.cohort.split("|")[-1], r.policy) for r in by_significance(ROWS)]
    assert order == [("summarise", "default"), ("plan", "planner"), ("summarise", "default"),
                     ("classify-intent-of-a-very-long-step-kind-name", "default"), ("extract", "default")]  # fmt: skip
    assert by_significance(ROWS)[0].state.status == "open"


def test_the_json_carries_every_cohort_and_the_open_alerts() -> None:
    doc = rates_json(by_significance(ROWS), ALERTS)
    assert [c["status"] for c in doc["cohorts"]][:2] == ["open", "cooling"]
    assert doc["open_alerts"][0]["compared_with_version"] == "claude-sonnet-4-20250514"


def test_the_chart_draws_each_window_the_reference_and_the_alert_span() -> None:
    points = [Point(i * W, W, 1, 100, 40 if 10 <= i < 14 else 10, {}) for i in range(24)]
    alert = {"alert_id": "a1", "opened_ms": 10 * W, "resolved_ms": 15 * W}
    svg = svg_chart(points, [alert], 0.1)
    assert svg.count("<circle") == 24 and svg.count('class="alert"') == 1 and 'class="reference"' in svg
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "no closed windows yet" in svg_chart([], [], None)
