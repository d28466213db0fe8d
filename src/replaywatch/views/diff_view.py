"""A diff object as a person reads it: plain data that ``replaywatch diff`` prints with
rich and ``replaywatch serve`` renders as HTML. Pure: no IO.

- a structure diff: its JSON Patch, an operation a line, with the recorded value
  (``before``) and the current one (``after``) as short excerpts;
- an attestation diff: the missing and the unexpected ids;
- a tool diff: the tool calls added, removed, moved and changed (the
  classification), a changed call with the paths that changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from replaywatch.compare.canonical import compact_bytes
from replaywatch.compare.structure import pointer_get
from replaywatch.compare.tool_changes import as_events, classify

EXCERPT: Final = 80
KIND_TITLES: Final = {
    "replay_structure_diff": "structure changed",
    "replay_attestation_diff": "attestation ids diverged",
    "replay_tool_diff": "tool events diverged",
}


@dataclass(frozen=True)
class Line:
    """One change. ``kind``: add, remove, replace, move, change, missing, unexpected."""

    kind: str
    label: str
    before: str | None = None
    after: str | None = None
    graded: str | None = None
    """Under comparators: the path's comparator, score and rule, and whether it passed."""
    decided: bool = False
    """The path failed its comparator: it made the structure drift."""


@dataclass(frozen=True)
class DiffView:
    kind: str
    run_id: str
    step_id: str
    lines: list[Line] = field(default_factory=list)

    @property
    def title(self) -> str:
        return KIND_TITLES.get(self.kind, self.kind)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for line in self.lines:
            out[line.kind] = out.get(line.kind, 0) + 1
        return out


def excerpt(value: Any, width: int = EXCERPT) -> str:
    """Compact JSON of ``value``, cut in the middle to ``width`` characters."""
    text = compact_bytes(value).decode()  # orjson alone refuses values nested over 254 levels
    return shorten(text, width)


def shorten(text: str, width: int) -> str:
    """``text`` cut in the middle to ``width`` characters (ids keep both ends)."""
    if len(text) <= width:
        return text
    if width < 5:
        return text[:width]
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head) :]


def kind_of(doc: dict[str, Any]) -> str:
    """The kind of a diff object, from its members (S3 metadata says it too)."""
    if "patch" in doc:
        return "replay_structure_diff"
    if "missing" in doc or "unexpected" in doc:
        return "replay_attestation_diff"
    return "replay_tool_diff"


def view(doc: dict[str, Any]) -> DiffView:
    """The view of a diff object (the JSON stored in S3)."""
    kind = kind_of(doc)
    run_id, step_id = str(doc.get("run_id", "")), str(doc.get("step_id", ""))
    if kind == "replay_structure_diff":
        lines = structure_lines(doc.get("patch") or [], doc.get("before") or {}, doc.get("paths") or [])
    elif kind == "replay_attestation_diff":
        lines = attestation_lines(doc)
    else:
        lines = tool_lines(doc)
    return DiffView(kind, run_id, step_id, lines)


def structure_lines(
    patch: list[dict[str, Any]], before: dict[str, Any], paths: list[dict[str, Any]] | None = None
) -> list[Line]:
    """A line per patch operation; under comparators, each with what its path's
    comparator said (a change below a graded path, such as an item of a set, takes the
    graded path's)."""
    graded = {p["path"]: p for p in paths or () if isinstance(p, dict) and "path" in p}
    lines = []
    for op in patch:
        path = op.get("path") or "(the whole snapshot)"
        was = excerpt(before[op["path"]]) if op.get("path") in before else None
        now = excerpt(op["value"]) if "value" in op else None
        result = _graded_for(str(op.get("path", "")), graded)
        note = None
        if result is not None:
            verdict = "passed" if result.get("passed") else "failed"
            note = f"{result.get('comparator')} {float(result.get('score', 0)):.2f} ({result.get('rule')}): {verdict}"
        lines.append(Line(op.get("op", "?"), path, was, now, note, result is not None and not result.get("passed")))
    return lines


def _graded_for(pointer: str, graded: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The graded result of ``pointer`` or of the nearest path above it."""
    while True:
        if pointer in graded:
            return graded[pointer]
        if not pointer:
            return None
        pointer = pointer.rsplit("/", 1)[0]


def attestation_lines(doc: dict[str, Any]) -> list[Line]:
    return [Line("missing", str(i)) for i in doc.get("missing") or []] + [
        Line("unexpected", str(i)) for i in doc.get("unexpected") or []
    ]


def tool_lines(doc: dict[str, Any]) -> list[Line]:
    """The tool changes of the diff (recomputed from recorded and current when an older
    diff has none)."""
    changes = doc.get("changes")
    if changes is None:
        changes = classify(doc.get("recorded"), doc.get("current"))
    recorded_events = as_events(doc.get("recorded"))
    lines = []
    for c in changes:
        tool = c.get("tool") or "(no tool name)"
        if c["kind"] == "moved":
            lines.append(Line("move", f"{tool}: position {c['from']} → {c['to']}"))
        elif c["kind"] == "added":
            lines.append(Line("add", f"{tool} at position {c['to']}", None, excerpt(c.get("event"))))
        elif c["kind"] == "removed":
            lines.append(Line("remove", f"{tool} from position {c['from']}", excerpt(c.get("event")), None))
        else:
            recorded = recorded_events[c["from"]] if c["from"] < len(recorded_events) else None
            for op in c.get("patch") or []:
                path = op.get("path") or ""
                was = None
                if op.get("op") in ("replace", "remove") and recorded is not None:
                    try:
                        was = excerpt(pointer_get(recorded, path))
                    except (KeyError, IndexError, TypeError, ValueError):
                        was = None
                now = excerpt(op["value"]) if "value" in op else None
                where = f"position {c['to']}" if c["from"] == c["to"] else f"position {c['to']} (was {c['from']})"
                lines.append(Line("change", f"{tool} at {where}: {path or '(the whole event)'}", was, now))
    return lines
