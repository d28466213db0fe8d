"""``replaywatch report``: a run's steps and verdicts (``--run``), from the projections;
the ignore rules' matches (``--rules``), from their statistics."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from replaywatch.projection import MISSING_SNAPSHOTS
from replaywatch.rule_stats import WARN_AFTER
from replaywatch.store.postgres import PostgresStore
from replaywatch.tail import COLOURS


async def report(store: PostgresStore, run_id: str, console: Console) -> bool:
    """Print the run's replay outcome; return whether every step is within tolerance."""
    steps, comps = await store.report(run_id)
    if not steps:
        console.print(f"no steps recorded for run {run_id!r}")
        return False
    table = Table(title=f"replay outcome of run {run_id}")
    for col in ("step", "baseline", "current", "attempts seen", "last status", "verdict", "comparisons"):
        table.add_column(col)
    all_within = True
    for s in steps:
        verdict = s["last_verdict"]
        if s["current_attempt"] is None:
            shown = f"[red]{MISSING_SNAPSHOTS}[/red]"
            all_within = False
        else:
            verdict = verdict or "within_tolerance"
            all_within &= verdict == "within_tolerance"
            shown = f"[{COLOURS.get(verdict, 'white')}]{verdict}[/]"
        table.add_row(
            s["step_id"], str(s["base_attempt"] if s["base_attempt"] is not None else "-"),
            str(s["current_attempt"] if s["current_attempt"] is not None else "-"), str(s["max_attempt"]),
            s["last_status"] or "", shown, str(s["comparisons"]),
        )  # fmt: skip
    console.print(table)
    if comps:
        history = Table(title="comparisons")
        for col in ("step", "base", "current", "verdict", "tokens Δ", "cost Δ", "diff"):
            history.add_column(col)
        for c in comps:
            history.add_row(
                c["step_id"], str(c["baseline_attempt"]), str(c["current_attempt"]),
                f"[{COLOURS.get(c['verdict'], 'white')}]{c['verdict']}[/]",
                "" if c["token_delta"] is None else f"{c['token_delta']:+g}",
                "" if c["cost_delta"] is None else f"{c['cost_delta']:+.6g}", c["diff_uri"] or "",
            )  # fmt: skip
        console.print(history)
    console.print(f"all within tolerance: {all_within}")
    return all_within


async def rules_report(store: PostgresStore, console: Console) -> bool:
    """Print each ignore rule's comparisons and matches; return whether a rule matched
    nothing in its first WARN_AFTER comparisons or more (a rule to check)."""
    rows = await store.rule_counts()
    if not rows:
        console.print(
            f"no ignore-rule statistics for group {store.group_id!r} (no ignore rules, or no comparisons yet)"
        )
        return False
    table = Table(title=f"ignore rules of group {store.group_id}")
    for col in ("policy", "rule", "comparisons", "matched in", "share"):
        table.add_column(col)
    silent = False
    for r in rows:
        share = r["matches"] / r["comparisons"] if r["comparisons"] else 0.0
        nothing = r["matches"] == 0 and r["comparisons"] >= WARN_AFTER
        silent |= nothing
        flag = "  [red]matched nothing: check the path[/red]" if nothing else ""
        table.add_row(r["policy"], r["rule"], str(r["comparisons"]), str(r["matches"]), f"{share:.1%}{flag}")
    console.print(table)
    return silent
