"""[ux] Renderers: diffs for people, and tail and report at 80 columns (snapshots in
tests/unit/snapshots/; REPLAYWATCH_UPDATE_SNAPSHOTS=1 writes them anew)."""

from __future__ import annotations

import io
import logging
import os
from collections import Counter, deque
from pathlib import Path
from typing import Any

import orjson
import pytest
from rich.console import Console

from replaywatch.cli.logs import DemoteLibraryNoise
from replaywatch.compare import Attempt, CompareConfig, compare_attempts
from replaywatch.views.diff_view import shorten, view
from replaywatch.views.report import run_tables
from replaywatch.views.show_diff import parse_target, render
from replaywatch.views.tail import Filters, pick_rows
from replaywatch.views.tail import render as tail_render

SNAPSHOTS = Path(__file__).parent / "snapshots"
VERDICTS = ("within_tolerance", "drift", "tool_event_divergence", "attestation_divergence")


def text_of(*renderables: Any, width: int = 80) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None, record=True, legacy_windows=False)
    for r in renderables:
        console.print(r)
    return console.export_text()


def matches_snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    if os.environ.get("REPLAYWATCH_UPDATE_SNAPSHOTS") == "1" or not path.exists():
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; REPLAYWATCH_UPDATE_SNAPSHOTS=1 to accept"


def diff_of(before: Any, after: Any, tools: tuple[Any, Any] = (None, None)) -> dict[str, Any]:
    kw = {} if tools[0] is None else {"tool_events": tools[0]}
    kw2 = {} if tools[1] is None else {"tool_events": tools[1]}
    c = compare_attempts(Attempt("run-7", "summarise", 1, before, **kw), Attempt("run-7", "summarise", 2, after, **kw2),
                         CompareConfig())  # fmt: skip
    assert c.diff is not None
    return orjson.loads(c.diff.body)  # type: ignore[no-any-return]


def test_a_structure_diff_shows_each_path_with_before_and_after() -> None:
    doc = diff_of({"answer": {"city": "Paris", "n": 1}, "gone": True}, {"answer": {"city": "Lyon", "n": 1}, "new": [1]})
    v = view(doc)
    assert v.title == "structure changed"
    assert [(ln.kind, ln.label, ln.before, ln.after) for ln in v.lines] == [
        ("replace", "/answer/city", '"Paris"', '"Lyon"'),
        ("remove", "/gone", "true", None),
        ("add", "/new", None, "[1]"),
    ]


def test_an_attestation_diff_lists_missing_and_unexpected_ids() -> None:
    v = view(diff_of({"attestation_ids": ["a", "b"]}, {"attestation_ids": ["b", "c"]}))
    assert [(ln.kind, ln.label) for ln in v.lines] == [("missing", "a"), ("unexpected", "c")]


def test_a_tool_diff_reads_as_calls_added_removed_moved_and_changed() -> None:
    rec = [{"tool": "plan"}, {"tool": "search", "args": {"q": "paris"}}, {"tool": "fetch"}, {"tool": "log"},
           {"tool": "gone"}]  # fmt: skip
    cur = [{"tool": "plan"}, {"tool": "search", "args": {"q": "lyon"}}, {"tool": "log"}, {"tool": "fetch"},
           {"tool": "write"}]  # fmt: skip
    v = view(diff_of({}, {}, (rec, cur)))
    assert [(ln.kind, ln.label, ln.before, ln.after) for ln in v.lines] == [
        ("move", "log: position 3 → 2", None, None),
        ("change", "search at position 1: /args/q", '"paris"', '"lyon"'),
        ("add", "write at position 4", None, '{"tool":"write"}'),
        ("remove", "gone from position 4", '{"tool":"gone"}', None),
    ]


def test_an_older_tool_diff_without_changes_is_classified_when_shown() -> None:
    v = view({"run_id": "r", "step_id": "s", "recorded": [{"tool": "a"}], "current": []})
    assert [(ln.kind, ln.label) for ln in v.lines] == [("remove", "a from position 0")]


def test_values_and_ids_are_cut_in_the_middle() -> None:
    assert shorten("run-2026-11-26-0123456789abcdef", 15) == "run-202…9abcdef"
    assert shorten("short", 15) == "short"
    doc = diff_of({"text": "x" * 500}, {"text": "y" * 500})
    text = text_of(*render(view(doc), "ab" * 32))
    assert max(map(len, text.splitlines())) <= 80 and "…" in text


def test_diff_at_80_columns() -> None:
    before = {"answer": {"city": "Paris", "bullets": ["a", "b"]}, "meta": {"model": "m-1"}}
    after = {"answer": {"city": "Lyon", "bullets": ["a"]}, "meta": {"model": "m-2"}, "extra": {"k": 1}}
    doc = diff_of(before, after)
    matches_snapshot("diff_structure_80.txt", text_of(*render(view(doc), "0123456789abcdef" * 4)))


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("A" * 64, ("sha", "a" * 64)),
        (f"s3://bucket/sha256/ab/cd/{'c' * 64}", ("sha", "c" * 64)),
        ("5B1C2D3E-8F4A-4B6C-9D0E-7A1B2C3D4E5F", ("event", "5b1c2d3e-8f4a-4b6c-9d0e-7a1b2c3d4e5f")),
    ],
)
def test_diff_targets(arg: str, expected: tuple[str, str]) -> None:
    assert parse_target(arg) == expected


def test_a_bad_diff_target_says_what_is_expected() -> None:
    with pytest.raises(ValueError, match=r"neither a diff's sha256 .* nor a comparison's event id"):
        parse_target("abc")


def event(n: int, verdict: str, run: str = "run-7-000042", provider: str | None = "openai") -> dict[str, Any]:
    return {"event_id": f"e{n}", "run_id": run, "step_id": f"step-{n % 4}-summarise-the-quarterly-report",
            "baseline_attempt": 1, "current_attempt": 2 + n % 3, "verdict": verdict, "token_delta": float(n % 5),
            "diff_sha256": f"{n:064x}" if verdict != "within_tolerance" else None, "detected_at": n,
            "provider": provider}  # fmt: skip


def test_tail_at_80_columns_keeps_verdicts_whole_and_drifts_in_view() -> None:
    events = [event(n, VERDICTS[0] if n % 5 else VERDICTS[1 + n % 3]) for n in range(60)]
    events[55]["run_id"] = "run-0f8e6d4c-2b1a-4c3d-9e8f-7a6b5c4d3e2f-shadow"
    drifts = deque((e for e in events if e["verdict"] != "within_tolerance"), maxlen=8)
    within = deque((e for e in events if e["verdict"] == "within_tolerance"), maxlen=8)
    counts = Counter(e["verdict"] for e in events)
    text = text_of(tail_render(pick_rows(drifts, within, 8), counts, len(events)))
    assert max(map(len, text.splitlines())) <= 80
    for v in VERDICTS[1:]:
        assert v in text  # never cut
    assert "within_tolerance: 48" in text.splitlines()  # the summary on lines of its own
    matches_snapshot("tail_80.txt", text)


def test_the_table_fills_with_within_tolerance_only_when_drifts_are_few() -> None:
    drifts = deque([event(5, "drift")], maxlen=3)
    within = deque([event(n, "within_tolerance") for n in (1, 2, 9)], maxlen=3)
    assert [e["event_id"] for e in pick_rows(drifts, within, 3)] == ["e2", "e5", "e9"]  # in time order
    assert [e["event_id"] for e in pick_rows(deque([event(n, "drift") for n in (1, 2, 3)]), within, 3)] == [
        "e1", "e2", "e3",
    ]  # fmt: skip


def test_tail_filters() -> None:
    ev = event(1, "drift", provider="anthropic")
    assert Filters()(ev) and Filters(only_drift=True)(ev)
    assert not Filters(only_drift=True)(event(2, "within_tolerance"))
    assert Filters(verdicts=frozenset({"drift"}))(ev) and not Filters(verdicts=frozenset({"tool_event_divergence"}))(ev)
    assert Filters(run="run-7-000042")(ev) and not Filters(run="run-8")(ev)
    assert Filters(provider="anthropic")(ev) and not Filters(provider="openai")(ev)


def test_report_at_80_columns() -> None:
    steps = [
        {"step_id": f"step-{i}-summarise-the-quarterly-report-for-the-board", "base_attempt": 1,
         "current_attempt": None if i == 4 else 3, "max_attempt": 3, "last_status": "succeeded",
         "last_verdict": VERDICTS[i % 4] if i != 4 else None, "comparisons": 2}
        for i in range(5)
    ]  # fmt: skip
    comps = [
        {"step_id": s["step_id"], "baseline_attempt": 1, "current_attempt": 2 + k,
         "verdict": s["last_verdict"] or "drift", "token_delta": 3.0 * k, "diff_sha256": "f" * 64 if k else None}
        for s in steps for k in (0, 1)
    ]  # fmt: skip
    renderables, ok = run_tables("run-0f8e6d4c-2b1a-4c3d-9e8f-7a6b5c4d3e2f", steps, comps)
    text = text_of(*renderables)
    assert not ok and max(map(len, text.splitlines())) <= 80
    for v in VERDICTS:
        assert v in text
    assert "missing output snapshots; cannot run mocked replay" in text
    matches_snapshot("report_80.txt", text)


def test_library_noise_is_not_an_error() -> None:
    demote = DemoteLibraryNoise()
    message = "Error sending LeaveGroupRequest: [Error 15] GroupCoordinatorNotAvailableError"
    noise = logging.LogRecord("aiokafka.consumer.group_coordinator", logging.ERROR, "f", 1, message, (), None)
    assert not demote.filter(noise) and noise.levelname == "DEBUG"
    real = logging.LogRecord("aiokafka.conn", logging.ERROR, "f", 1, "Unable to connect to 127.0.0.1:9", (), None)
    assert demote.filter(real) and real.levelname == "ERROR"


MARKUP_IDS = ["s[/]", "[bold]run[/bold]", "x[/red]y", "[link=http://e]z"]


@pytest.mark.parametrize("text_id", MARKUP_IDS)
def test_ids_that_look_like_markup_are_shown_as_they_are(text_id: str) -> None:
    """Ids are data: rich's markup in them is printed, never interpreted (it crashed
    `replaywatch report` and `tail` with MarkupError)."""
    ev = event(1, "drift") | {"run_id": f"r{text_id}", "step_id": text_id}
    tail_text = text_of(tail_render([ev], Counter(drift=1), 1), width=200)
    assert text_id in tail_text and f"r{text_id}" in tail_text
    steps = [{"step_id": text_id, "base_attempt": 1, "current_attempt": 2, "max_attempt": 2, "last_status": text_id,
              "last_verdict": "drift", "comparisons": 1}]  # fmt: skip
    comps = [{"step_id": text_id, "baseline_attempt": 1, "current_attempt": 2, "verdict": "drift",
              "token_delta": None, "diff_sha256": None}]  # fmt: skip
    report_text = text_of(*run_tables(f"run{text_id}", steps, comps, width=200)[0], width=200)
    assert report_text.count(text_id) >= 3 and f"run{text_id}" in report_text


def test_a_diff_deeper_than_orjson_writes_is_shown_and_dumped() -> None:
    """A structure diff of snapshots at the contract's 1,024 levels: the diff object is
    read (a few levels deeper than orjson reads), rendered, and dumped as JSON."""
    from replaywatch.compare.canonical import MAX_DEPTH, canonical_bytes
    from replaywatch.views.show_diff import dump_json, load_deep

    def deep(leaf: Any) -> Any:
        value: Any = {"leaf": leaf}
        for _ in range(MAX_DEPTH - 2):
            value = {"k": value}
        return value

    c = compare_attempts(Attempt("r", "s", 1, {"a": 1}), Attempt("r", "s", 2, {"a": deep(2)}), CompareConfig())
    assert c.diff is not None
    body = c.diff.body
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(body)  # deeper than orjson reads
    doc = load_deep(body)
    assert canonical_bytes(doc) == body
    lines = render(view(doc), c.diff.sha256)
    shown = text_of(*lines)
    assert "/a" in shown and '{"k":{"k"' in shown
    assert canonical_bytes(load_deep(dump_json(doc))) == body


def test_a_graded_diff_shows_each_paths_comparator_and_marks_the_deciding_ones() -> None:
    from replaywatch.compare.comparators import Comparator
    from replaywatch.compare.graded import PathComparators

    config = CompareConfig(comparators=PathComparators.compile([
        ("output_snapshot.answer", Comparator("text", 0.8)), ("output_snapshot.sources", Comparator("set")),
    ]))  # fmt: skip
    before = Attempt("r", "s", 1, {"answer": "Paris is the capital.", "sources": ["a", "b"]})
    c = compare_attempts(before, Attempt("r", "s", 2, {"answer": "paris is the capital!", "sources": ["b"]}), config)
    assert c.diff is not None
    v = view(orjson.loads(c.diff.body))
    by_label = {line.label: line for line in v.lines}
    assert by_label["/answer"].graded == "text 0.95 (threshold 0.8): passed" and not by_label["/answer"].decided
    assert by_label["/sources/1"].graded is not None and by_label["/sources/1"].decided  # under the set's path
    text = text_of(*render(v, c.diff.sha256))
    assert "    ! set 0.50 (threshold 1): failed" in text and "    = text 0.95 (threshold 0.8): passed" in text
