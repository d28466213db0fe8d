"""``replaywatch report``: a run's steps and verdicts (``--run``), from the projections;
the ignore rules' matches (``--rules``), from their statistics."""

from __future__ import annotations

from typing import Any

import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

from replaywatch.core.projection import MISSING_SNAPSHOTS
from replaywatch.state.rule_stats import WARN_AFTER
from replaywatch.store.history import History
from replaywatch.views.diff_view import shorten
from replaywatch.views.tail import COLOURS


def _verdict(v: str) -> Text:
    return Text(v, style=COLOURS.get(v, "white"))


def run_tables(run_id: str, steps: list[Any], comps: list[Any], width: int = 80) -> tuple[list[Any], bool]:
    """The renderables of a run's report, laid out for ``width`` columns (verdicts never
    cut, ids shortened from the middle), and whether every step is within tolerance."""
    id_width = max(10, width - 62)
    table = Table(title=Text(f"run {shorten(run_id, width - 10)}"), expand=True, title_justify="left")
    table.add_column("step", no_wrap=True, ratio=1)
    table.add_column("pair", no_wrap=True)
    table.add_column("seen", no_wrap=True, justify="right")
    table.add_column("status", no_wrap=True)
    table.add_column("verdict", no_wrap=True, min_width=len("attestation_divergence"))
    table.add_column("n", no_wrap=True, justify="right")
    all_within = True
    for s in steps:
        if s["current_attempt"] is None:
            shown = Text("no snapshot", style="red")
            all_within = False
        else:
            verdict = s["last_verdict"] or "within_tolerance"
            all_within &= verdict == "within_tolerance"
            shown = _verdict(verdict)
        pair = "-" if s["current_attempt"] is None else f"{s['base_attempt']}→{s['current_attempt']}"
        table.add_row(Text(shorten(s["step_id"], id_width)), pair, str(s["max_attempt"]), Text(s["last_status"] or ""),
                      shown, str(s["comparisons"]))  # fmt: skip
    out: list[Any] = [table]
    if comps:
        history = Table(title="comparisons", expand=True, title_justify="left")
        history.add_column("step", no_wrap=True, ratio=1)
        history.add_column("pair", no_wrap=True)
        history.add_column("verdict", no_wrap=True, min_width=len("attestation_divergence"))
        history.add_column("tokens Δ", no_wrap=True, justify="right")
        history.add_column("diff", no_wrap=True)
        for c in comps:
            history.add_row(
                Text(shorten(c["step_id"], id_width)), f"{c['baseline_attempt']}→{c['current_attempt']}",
                _verdict(c["verdict"]), "" if c["token_delta"] is None else f"{c['token_delta']:+g}",
                (c["diff_sha256"] or "")[:12],
            )  # fmt: skip
        out.append(history)
    missing = [s["step_id"] for s in steps if s["current_attempt"] is None]
    if missing:
        out.append(Text(f"{len(missing)} step(s) with no snapshot: {MISSING_SNAPSHOTS}", style="red"))
    out.append(Text(f"all within tolerance: {all_within}"))
    return out, all_within


async def report(store: History, run_id: str, console: Console, *, as_json: bool = False,
                 only_drift: bool = False) -> bool:  # fmt: skip
    """Print the run's replay outcome; return whether every step is within tolerance."""
    steps, comps = await store.report(run_id)
    if only_drift:
        comps = [c for c in comps if c["verdict"] != "within_tolerance"]
    if not steps:
        console.print(Text(f"no steps recorded for run {run_id!r}"))
        return False
    renderables, all_within = run_tables(run_id, steps, comps, console.width)
    if as_json:
        doc = {"run_id": run_id, "all_within_tolerance": all_within, "steps": [dict(s) for s in steps],
               "comparisons": [dict(c) for c in comps]}  # fmt: skip
        console.file.write(orjson.dumps(doc, default=str).decode() + "\n")
        return all_within
    for r in renderables:
        console.print(r)
    return all_within


async def rules_report(store: History, console: Console) -> bool:
    """Print each ignore rule's comparisons and matches; return whether a rule matched
    nothing in its first WARN_AFTER comparisons or more (a rule to check)."""
    rows = await store.rule_counts()
    if not rows:
        console.print(
            Text(f"no ignore-rule statistics for group {store.group_id!r} (no ignore rules, or no comparisons yet)")
        )
        return False
    table = Table(title=Text(f"ignore rules of group {store.group_id}"))
    for col in ("policy", "rule", "comparisons", "matched in", "share"):
        table.add_column(col)
    silent = False
    for r in rows:
        share = r["matches"] / r["comparisons"] if r["comparisons"] else 0.0
        nothing = r["matches"] == 0 and r["comparisons"] >= WARN_AFTER
        silent |= nothing
        shown = Text(f"{share:.1%}")
        if nothing:
            shown.append("  matched nothing: check the path", style="red")
        table.add_row(Text(r["policy"]), Text(r["rule"]), str(r["comparisons"]), str(r["matches"]), shown)
    console.print(table)
    return silent
