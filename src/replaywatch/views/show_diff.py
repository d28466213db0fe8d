"""``replaywatch diff SHA|EVENT_ID``: from an alert to the diff in one step.

An alert carries a ``diff_sha256`` or an ``event_id``. This fetches the diff object
from S3 (looking the event's diff up in PostgreSQL first), checks it against its
name, and prints it for a person (``diff_view``), or raw with ``--json``.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import uuid
from typing import Any

import orjson
from rich.console import Console
from rich.text import Text

from replaywatch.compare.canonical import canonical_bytes
from replaywatch.exceptions import CorruptDiff, NotFound
from replaywatch.ports import DiffStore
from replaywatch.store.history import History
from replaywatch.views.diff_view import DiffView, shorten, view

SHA = re.compile(r"[0-9a-f]{64}")
STYLES = {
    "add": "green", "remove": "red", "replace": "yellow", "move": "cyan", "change": "yellow",
    "missing": "red", "unexpected": "magenta",
}  # fmt: skip
MARKS = {"add": "+", "remove": "-", "replace": "~", "move": "↕", "change": "~", "missing": "-", "unexpected": "+"}


def parse_target(arg: str) -> tuple[str, str]:
    """("sha", sha256) or ("event", event id); ValueError for anything else."""
    text = arg.strip().lower()
    if text.startswith("s3://"):
        text = text.rsplit("/", 1)[-1]
    if SHA.fullmatch(text):
        return "sha", text
    try:
        return "event", str(uuid.UUID(text))
    except ValueError:
        raise ValueError(
            f"{arg!r} is neither a diff's sha256 (64 hex digits) nor a comparison's event id (a UUID)"
        ) from None


async def sha_of_event(store: History, event_id: str) -> str:
    row = await store.comparison(event_id)
    if row is None:
        raise NotFound(f"no comparison {event_id} in PostgreSQL (schema {store.schema})")
    if row["diff_sha256"] is None:
        raise NotFound(f"comparison {event_id} ({row['verdict']}) has no diff: only drift in tokens or cost, or none")
    return str(row["diff_sha256"])


async def fetch(diffs: DiffStore, sha: str) -> dict[str, Any]:
    """The diff object named ``sha``, checked against its name."""
    body, _ = await diffs.get(sha)
    if hashlib.sha256(body).hexdigest() != sha:
        raise CorruptDiff(f"diff object {sha} is corrupt: its bytes hash to {hashlib.sha256(body).hexdigest()}")
    try:
        doc = load_deep(body)
    except (ValueError, RecursionError) as exc:
        raise CorruptDiff(f"diff object {sha} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise CorruptDiff(f"diff object {sha} is not a JSON object")
    return doc


DEEPEST_DIFF = 1100
"""Levels a diff object may nest: a snapshot's 1,024 and the few of the diff around it."""


def load_deep(body: bytes) -> Any:
    """A diff object's JSON. orjson reads up to 1,024 levels; a diff of a snapshot at that
    limit holds it a few levels down, and is read by the standard library with room for
    ``DEEPEST_DIFF`` levels (its C parser counts them against the recursion limit)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth" not in str(exc):
            raise
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, DEEPEST_DIFF + 200))
    try:
        return json.loads(body)
    finally:
        sys.setrecursionlimit(limit)


def dump_json(doc: Any) -> bytes:
    """A diff object as indented JSON (``replaywatch diff --json``); compact when it nests
    deeper than orjson writes."""
    try:
        return orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError:
        return canonical_bytes(doc)


def render(v: DiffView, sha: str, width: int = 80) -> list[Text]:
    """The view as coloured lines no wider than ``width``: a header, then a line per
    change with its recorded value (``-``) and its current one (``+``) under it, long
    values cut in the middle."""
    counts = ", ".join(f"{n} {k}" for k, n in v.counts().items()) or "no changes"
    out = [
        Text(f"{v.title} · run {shorten(v.run_id, 24)} · step {shorten(v.step_id, 24)}", style="bold"),
        Text(f"sha256 {shorten(sha, width - 7)}", style="dim"),
        Text(counts, style="dim"),
    ]
    for line in v.lines:
        style = STYLES.get(line.kind, "white")
        out.append(Text(f"{MARKS.get(line.kind, '·')} {shorten(line.label, width - 2)}", style=style))
        if line.graded is not None:
            out.append(Text(f"    {'!' if line.decided else '='} {shorten(line.graded, width - 6)}",
                            style="bold red" if line.decided else "dim"))  # fmt: skip
        if line.before is not None:
            out.append(Text(f"    - {shorten(line.before, width - 6)}", style="red"))
        if line.after is not None:
            out.append(Text(f"    + {shorten(line.after, width - 6)}", style="green"))
    return out


def show(doc: dict[str, Any], sha: str, console: Console) -> None:
    for line in render(view(doc), sha, console.width):
        console.print(line, overflow="ignore", crop=False, soft_wrap=True)
