"""The rates as people read them: ``replaywatch rates`` at 80 columns (or JSON), and the
web view's chart of a cohort's drift rate over time, a server-rendered SVG. Pure."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any

from rich.table import Table
from rich.text import Text

from replaywatch.store.rates_history import CohortRate, Point
from replaywatch.views.diff_view import shorten


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _hhmm(ms: int | None) -> str:
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%m-%d %H:%M")


def rates_table(rows: list[CohortRate], width: int = 80) -> Table:
    """Each cohort's last judged window, most significant first: comparisons, drift
    rate, its reference's, the ratio, the q-value, and the alert state."""
    table = Table(title=Text("drift rates by cohort, last window judged"), expand=True, title_justify="left")
    table.add_column("cohort", no_wrap=True, ratio=1)
    for name in ("n", "rate", "ref", "ratio", "q"):
        table.add_column(name, no_wrap=True, justify="right")
    table.add_column("alert", no_wrap=True)
    cohort_width = max(16, width - 52)
    for r in rows:
        last = r.last
        ratio = last.get("ratio")
        q = last.get("q_value")
        name = r.cohort if r.policy == "default" else f"{r.cohort}#{r.policy}"
        table.add_row(
            Text(shorten(name, cohort_width)), str(last.get("comparisons", 0)), _pct(last.get("rate")),
            _pct(last.get("reference_rate")), "-" if ratio is None else f"{ratio:.2f}x",
            "-" if q is None else f"{q:.0e}" if q < 0.01 else f"{q:.2f}",
            {"open": "OPEN", "cooling": "cooling"}.get(r.state.status, ""),
        )  # fmt: skip
    return table


def alerts_table(alerts: list[dict[str, Any]], width: int = 80) -> Table:
    table = Table(title=Text("open alerts"), expand=True, title_justify="left")
    table.add_column("since", no_wrap=True)
    table.add_column("cohort", no_wrap=True, ratio=1)
    table.add_column("rate", no_wrap=True, justify="right")
    table.add_column("compared with", no_wrap=True)
    for a in alerts:
        o = a["opened"]
        against = (shorten(str(o["compared_with_version"]), 22) if o.get("reference") == "previous_version"
                   else f"last {o.get('reference_windows', 0)} windows")  # fmt: skip
        table.add_row(_hhmm(a["opened_ms"]), Text(shorten(o["cohort"], max(16, width - 58))),
                      f"{_pct(o.get('rate'))} vs {_pct(o.get('reference_rate'))}", Text(against))  # fmt: skip
    return table


def rates_json(rows: list[CohortRate], alerts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "cohorts": [{"cohort": r.cohort, "policy": r.policy, "status": r.state.status, "alert_id": r.state.alert_id,
                     **r.last} for r in rows],
        "open_alerts": [a["opened"] | {"alert_id": a["alert_id"]} for a in alerts],
    }  # fmt: skip


def svg_chart(points: list[Point], alerts: list[dict[str, Any]], reference: float | None,
              width: int = 860, height: int = 220) -> str:  # fmt: skip
    """The drift rate of each window as a line, the current reference as a dashed line,
    and each alert's span shaded; time along, rate up. Plain SVG, no script."""
    left, right, top, bottom = 48, 12, 12, 28
    if not points:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img">'
                f'<text x="{left}" y="{height // 2}">no closed windows yet</text></svg>')  # fmt: skip
    t0, t1 = points[0].start_ms, points[-1].start_ms + points[-1].width_ms
    span = max(1, t1 - t0)
    top_rate = max([p.rate or 0.0 for p in points] + [reference or 0.0, 0.05]) * 1.15

    def x(t: int) -> float:
        return left + (width - left - right) * (t - t0) / span

    def y(r: float) -> float:
        return top + (height - top - bottom) * (1 - r / top_rate)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="drift rate over time" font-family="system-ui, sans-serif" font-size="11">']  # fmt: skip
    for a in alerts:
        end = a["resolved_ms"] + points[0].width_ms if a["resolved_ms"] is not None else t1
        start = max(t0, a["opened_ms"])
        if end > t0 and start < t1:
            wide = max(2.0, x(min(end, t1)) - x(start))
            parts.append(f'<rect class="alert" x="{x(start):.1f}" y="{top}" width="{wide:.1f}" '
                         f'height="{height - top - bottom}" fill="#ffebe9">'
                         f'<title>alert {escape(a["alert_id"])}</title></rect>')  # fmt: skip
    for i in range(5):
        r = top_rate * i / 4
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(r):.1f}" y2="{y(r):.1f}" stroke="#d0d7de"/>'
                     f'<text x="{left - 6}" y="{y(r) + 4:.1f}" text-anchor="end">{100 * r:.0f}%</text>')  # fmt: skip
    for t, anchor in ((t0, "start"), (t0 + span // 2, "middle"), (t1, "end")):
        parts.append(f'<text x="{x(t):.1f}" y="{height - 8}" text-anchor="{anchor}">{_hhmm(t)}</text>')
    if reference is not None:
        parts.append(f'<line class="reference" x1="{left}" x2="{width - right}" y1="{y(reference):.1f}" '
                     f'y2="{y(reference):.1f}" stroke="#57606a" stroke-dasharray="5 4"><title>reference '
                     f'{100 * reference:.1f}%</title></line>')  # fmt: skip
    line = " ".join(f"{x(p.start_ms + p.width_ms // 2):.1f},{y(p.rate):.1f}" for p in points if p.rate is not None)
    parts.append(f'<polyline class="rate" points="{line}" fill="none" stroke="#0969da" stroke-width="2"/>')
    for p in points:
        if p.rate is not None:
            parts.append(f'<circle cx="{x(p.start_ms + p.width_ms // 2):.1f}" cy="{y(p.rate):.1f}" r="2.5" '
                         f'fill="#0969da"><title>{_hhmm(p.start_ms)}: {_pct(p.rate)} of {p.comparisons}'
                         f'</title></circle>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)
