"""``replaywatch report --run RUN_ID``: each step's state and verdicts, from the projections."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from replaywatch.projection import MISSING_SNAPSHOTS
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
