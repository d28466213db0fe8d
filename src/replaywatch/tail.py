"""``replaywatch tail``: a live, coloured table of verdicts from the output topic."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from typing import Any

from aiokafka import AIOKafkaConsumer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from replaywatch import codec

COLOURS = {
    "within_tolerance": "green",
    "drift": "yellow",
    "tool_event_divergence": "magenta",
    "attestation_divergence": "bold red",
}


def _render(rows: deque[dict[str, Any]], counts: Counter[str], seen: int) -> Group:
    table = Table(title=f"replaywatch: {seen} comparisons", expand=True)
    for col in ("run", "step", "base", "current", "verdict", "tokens Δ", "cost Δ", "diff"):
        table.add_column(col)
    for r in rows:
        colour = COLOURS.get(r["verdict"], "white")
        table.add_row(
            r["run_id"], r["step_id"], str(r["baseline_attempt"]), str(r["current_attempt"]),
            f"[{colour}]{r['verdict']}[/{colour}]",
            "" if r["token_delta"] is None else f"{r['token_delta']:+g}",
            "" if r["cost_delta"] is None else f"{r['cost_delta']:+.6g}",
            (r["diff_kind"] or "") + (f" {r['diff_sha256'][:12]}" if r["diff_sha256"] else ""),
        )  # fmt: skip
    totals = Table.grid(padding=(0, 2))
    totals.add_row(*[f"[{COLOURS.get(v, 'white')}]{v}: {n}[/]" for v, n in sorted(counts.items())])
    return Group(table, totals)


async def tail(
    bootstrap: str,
    topic: str,
    *,
    until: int | None,
    timeout: float | None,
    from_beginning: bool,
    rows: int = 20,
    console: Console | None = None,
) -> Counter[str]:
    """Show verdicts as they arrive; stop after ``until`` distinct events or ``timeout`` s."""
    console = console or Console()
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest", group_id=None,
    )  # fmt: skip
    await consumer.start()
    recent: deque[dict[str, Any]] = deque(maxlen=rows)
    counts: Counter[str] = Counter()
    ids: set[str] = set()
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        with Live(_render(recent, counts, 0), console=console, refresh_per_second=4) as live:
            while (until is None or len(ids) < until) and (deadline is None or time.monotonic() < deadline):
                batch = await consumer.getmany(timeout_ms=250)
                for msgs in batch.values():
                    for m in msgs:
                        ev = codec.decode_comparison(m.value)
                        if ev["event_id"] in ids:
                            counts["(duplicate ids)"] += 1
                            continue
                        ids.add(ev["event_id"])
                        counts[ev["verdict"]] += 1
                        recent.append(ev)
                live.update(_render(recent, counts, len(ids)))
                await asyncio.sleep(0)
    finally:
        await consumer.stop()
    return counts
