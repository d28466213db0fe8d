"""``replaywatch tail``: a live, coloured table of verdicts from the output topic.

Readable at 80 columns (what rich assumes when the output is not a terminal): verdicts
are never cut, ids are shortened from the middle, and the summary sits on lines of its
own. The table keeps the comparisons that matter: the last drifts and divergences,
not the last comparisons (almost all within tolerance). Filters pick events by
verdict, run and provider; ``--json`` prints one event a line for scripts.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from replaywatch import codec
from replaywatch.views.diff_view import shorten

COLOURS = {
    "within_tolerance": "green",
    "drift": "yellow",
    "tool_event_divergence": "magenta",
    "attestation_divergence": "bold red",
}
WITHIN = "within_tolerance"


@dataclass(frozen=True)
class Filters:
    verdicts: frozenset[str] = frozenset()
    run: str | None = None
    provider: str | None = None
    only_drift: bool = False

    def __call__(self, ev: dict[str, Any]) -> bool:
        if self.verdicts and ev["verdict"] not in self.verdicts:
            return False
        if self.only_drift and ev["verdict"] == WITHIN:
            return False
        if self.run is not None and ev["run_id"] != self.run:
            return False
        return self.provider is None or ev.get("provider") == self.provider


def _delta(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def render(rows: list[dict[str, Any]], counts: Counter[str], seen: int, width: int = 80) -> Group:
    """The table of ``rows`` and the summary, laid out for ``width`` columns: the
    verdict, pair, token delta and diff columns keep their width, the run and step ids
    share what is left and are shortened from the middle to fit it."""
    fixed = len("attestation_divergence") + len("1→12") + len("Δ tok") + 1 + 8 + 5 * 2  # 5 gaps of 2
    room = max(16, width - fixed)
    run_w = room * 3 // 5
    step_w = room - run_w
    table = Table(title=f"replaywatch: {seen} comparisons · the last {len(rows)} shown", box=None,
                  title_justify="left", pad_edge=False, padding=(0, 1), header_style="bold")  # fmt: skip
    table.add_column("run", width=run_w, no_wrap=True)
    table.add_column("step", width=step_w, no_wrap=True)
    table.add_column("pair", no_wrap=True, width=4)
    table.add_column("verdict", no_wrap=True, width=len("attestation_divergence"))
    table.add_column("Δ tok", justify="right", no_wrap=True, width=6)
    table.add_column("diff", no_wrap=True, width=8)
    for r in rows:
        colour = COLOURS.get(r["verdict"], "white")
        table.add_row(
            Text(shorten(r["run_id"], run_w)), Text(shorten(r["step_id"], step_w)),
            f"{r['baseline_attempt']}→{r['current_attempt']}", Text(r["verdict"], style=colour),
            _delta(r["token_delta"], "+g"), (r["diff_sha256"] or "")[:8],
        )  # fmt: skip
    summary = [Text(f"{v}: {n}", style=COLOURS.get(v, "white")) for v, n in sorted(counts.items())]
    return Group(table, *summary)


def pick_rows(recent: deque[dict[str, Any]], within: deque[dict[str, Any]], rows: int) -> list[dict[str, Any]]:
    """The last drifts and divergences; within-tolerance ones only to fill the table."""
    if len(recent) >= rows:
        return list(recent)[-rows:]
    fill = list(within)[-(rows - len(recent)) :] if rows > len(recent) else []
    return sorted(fill + list(recent), key=lambda e: e["detected_at"])


async def tail(
    client: dict[str, Any],
    topic: str,
    *,
    until: int | None,
    timeout: float | None,
    from_beginning: bool,
    rows: int = 20,
    console: Console | None = None,
    keep: Callable[[dict[str, Any]], bool] = Filters(),
    as_json: bool = False,
) -> Counter[str]:
    """Show verdicts as they arrive; stop after ``until`` distinct events (those kept by
    the filters) or ``timeout`` s."""
    console = console or Console()
    consumer = AIOKafkaConsumer(
        topic, **client, isolation_level="read_committed", enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest", group_id=None,
    )  # fmt: skip
    await consumer.start()
    drifts: deque[dict[str, Any]] = deque(maxlen=rows)
    within: deque[dict[str, Any]] = deque(maxlen=rows)
    counts: Counter[str] = Counter()
    ids: set[str] = set()
    deadline = None if timeout is None else time.monotonic() + timeout

    def view() -> Group:
        return render(pick_rows(drifts, within, rows), counts, len(ids), console.width)

    live = None if as_json else Live(view(), console=console, refresh_per_second=4)
    try:
        if live is not None:
            live.start()
        while (until is None or len(ids) < until) and (deadline is None or time.monotonic() < deadline):
            batch = await consumer.getmany(timeout_ms=250)
            for msgs in batch.values():
                for m in msgs:
                    ev = codec.decode_comparison(m.value)
                    if not keep(ev):
                        continue
                    if ev["event_id"] in ids:
                        counts["(duplicate ids)"] += 1
                        continue
                    ids.add(ev["event_id"])
                    counts[ev["verdict"]] += 1
                    (within if ev["verdict"] == WITHIN else drifts).append(ev)
                    if as_json:
                        console.file.write(orjson.dumps(ev, default=str).decode() + "\n")
            if live is not None:
                live.update(view())
            await asyncio.sleep(0)
    finally:
        if live is not None:
            live.stop()
        await consumer.stop()
    return counts
