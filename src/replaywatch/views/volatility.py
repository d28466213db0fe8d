"""``replaywatch report --volatility``: each cohort's flakiness, from its envelopes
(``envelope.volatility``), at 80 columns; ``--suggest``: a policy rule per cohort that
would have kept its false alerts under a target on the history seen."""

from __future__ import annotations

import fnmatch

from rich.console import Console
from rich.table import Table
from rich.text import Text

from replaywatch.envelope.volatility import Volatility, by_cohort, suggest, toml_rule
from replaywatch.store.history import History
from replaywatch.views.diff_view import shorten


def volatility_table(rows: list[Volatility], k: int, width: int = 80) -> Table:
    """The cohorts, flakiest first: re-runs seen and learned, flake rate, pass^k, the
    share judged outside their envelope, and the paths that vary most."""
    table = Table(title=Text("cohorts by flake rate"), expand=True, title_justify="left")
    table.add_column("cohort", no_wrap=True, ratio=2)
    table.add_column("seen", no_wrap=True, justify="right")
    table.add_column("flake", no_wrap=True, justify="right")
    table.add_column(f"pass^{k}", no_wrap=True, justify="right")
    table.add_column("alerts", no_wrap=True, justify="right")
    table.add_column("varies most", no_wrap=True, ratio=3)
    cohort_width = max(12, (width - 40) * 2 // 5)
    path_width = max(12, (width - 40) * 3 // 5)
    for v in rows:
        paths = ", ".join(f"{p} {r:.0%}" for p, r in v.top_paths(2))
        table.add_row(Text(shorten(v.cohort, cohort_width)), str(v.envelope.seen), f"{v.flake_rate:.1%}",
                      f"{v.pass_k(k):.2f}", f"{v.alert_rate:.1%}", Text(shorten(paths, path_width)))  # fmt: skip
    return table


async def volatility_report(store: History, console: Console, *, k: int = 3, cohort: str = "*",
                            suggest_target: float | None = None) -> bool:  # fmt: skip
    """Print the volatility of the cohorts ``cohort`` (a glob) matches, or with
    ``suggest_target`` a policy rule for each; return whether there was any."""
    rows = [v for v in by_cohort(await store.envelopes()) if fnmatch.fnmatchcase(v.cohort, cohort)]
    if not rows:
        console.print(Text(f"no envelopes for group {store.group_id!r} (no adaptive policy, or no comparisons yet)"))
        return False
    if suggest_target is None:
        console.print(volatility_table(rows, k, console.width))
        return True
    for v in rows:
        comment = (f"cohort {v.cohort}: {v.envelope.learned} re-runs learned, flake rate {v.flake_rate:.1%}; "
                   f"false alerts under {suggest_target:.0%} on them")  # fmt: skip
        console.file.write(toml_rule(suggest(v, suggest_target), comment) + "\n")
    return True
