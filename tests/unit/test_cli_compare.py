"""``replaywatch compare``: output, exit status, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from replaywatch.cli import app

runner = CliRunner()


def write(tmp_path: Path, name: str, doc: object) -> str:
    p = tmp_path / name
    p.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return str(p)


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["compare", *args])


def test_within_exits_0(tmp_path: Path) -> None:
    a = write(tmp_path, "a.json", {"output_snapshot": {"m": 1, "tokens": 100}})
    b = write(tmp_path, "b.json", {"output_snapshot": {"m": 1, "tokens": 100.5}})
    r = invoke(a, b, "--tokens-tolerance", "0.01")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["verdict"] == "within_tolerance" and out["token_delta"] == 0.5
    assert out["diff_kind"] is None and out["diff_sha256"] is None


def test_divergence_exits_1_and_shows_diff(tmp_path: Path) -> None:
    a = write(tmp_path, "a.json", {"output_snapshot": {"attestation_ids": ["x"]}, "run_id": "r", "step_id": "s"})
    b = write(tmp_path, "b.json", {"output_snapshot": {"attestation_ids": ["y"]}, "run_id": "r", "step_id": "s"})
    r = invoke(a, b, "--show-diff")
    assert r.exit_code == 1
    out = json.loads(r.stdout)
    assert out["verdict"] == "attestation_divergence"
    assert out["missing_attestations"] == ["x"] and out["unexpected_attestations"] == ["y"]
    assert out["diff_kind"] == "replay_attestation_diff" and len(out["diff_sha256"]) == 64
    assert out["diff"]["missing"] == ["x"]


def test_ignore_flag(tmp_path: Path) -> None:
    a = write(tmp_path, "a.json", {"output_snapshot": {"m": 1}, "tool_events": [{"span": 1}]})
    b = write(tmp_path, "b.json", {"output_snapshot": {"m": 1}, "tool_events": [{"span": 2}]})
    assert invoke(a, b).exit_code == 1
    assert invoke(a, b, "--ignore", "tool_events[*].span").exit_code == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must hold one JSON object"),
        ('{"tool_events": []}', "missing output snapshots; cannot run mocked replay"),
        ('{"output_snapshot": {"a": NaN}}', "NaN"),
    ],
)
def test_bad_input_exits_2_naming_the_file(tmp_path: Path, content: str, message: str) -> None:
    good = write(tmp_path, "good.json", {"output_snapshot": {}})
    bad = write(tmp_path, "bad.json", content)
    r = invoke(good, bad)
    assert r.exit_code == 2
    assert "bad.json" in r.stderr and message in r.stderr
    assert "Traceback" not in r.stderr


def test_unreadable_file(tmp_path: Path) -> None:
    good = write(tmp_path, "good.json", {"output_snapshot": {}})
    r = invoke(good, str(tmp_path / "nope.json"))
    assert r.exit_code == 2 and "nope.json" in r.stderr and "cannot read" in r.stderr


@pytest.mark.parametrize("tol", ["-0.1", "nan", "inf"])
def test_bad_tolerance(tmp_path: Path, tol: str) -> None:
    good = write(tmp_path, "good.json", {"output_snapshot": {}})
    r = invoke(good, good, "--tokens-tolerance", tol)
    assert r.exit_code == 2 and "tokens_tolerance" in r.stderr


def test_bad_ignore_path(tmp_path: Path) -> None:
    good = write(tmp_path, "good.json", {"output_snapshot": {}})
    r = invoke(good, good, "--ignore", "meta.id")
    assert r.exit_code == 2 and "must start with" in r.stderr


def test_the_log_rate_limit_keeps_messages_that_differ_and_drops_repeats() -> None:
    import logging

    from replaywatch.cli.logs import OncePer

    limit = OncePer(10.0)

    def record(*args: object) -> logging.LogRecord:
        return logging.LogRecord(
            "replaywatch.pipeline", logging.INFO, __file__, 1, "partitions assigned: %s", args, None
        )

    assert limit.filter(record([0, 1, 2, 3]))
    assert limit.filter(record([0, 2]))  # the same template, another rebalance: seen
    assert not limit.filter(record([0, 2]))  # the same text again within 10 s: dropped


def deep(levels: int, leaf: object) -> str:
    return "[" * (levels - 1) + json.dumps(leaf) + "]" * (levels - 1)


def test_snapshots_nested_600_and_1000_levels_compare(tmp_path: Path) -> None:
    for levels in (600, 1000):
        a = write(tmp_path, "a.json", '{"output_snapshot": {"d": ' + deep(levels, 1) + "}}")
        b = write(tmp_path, "b.json", '{"output_snapshot": {"d": ' + deep(levels, 2) + "}}")
        r = invoke(a, b, "--show-diff")
        assert r.exit_code == 1, r.output  # drift, not a crash
        out = json.loads(r.stdout)
        assert out["verdict"] == "drift" and out["diff"]["patch"][0]["path"].count("/") == levels


@pytest.mark.parametrize(
    "content",
    [
        '{"output_snapshot": {"d": ' + deep(1030, 1) + "}}",  # deeper than the contract
        '{"output_snapshot": {"n": 1e999}}',  # not a finite number
        '{"output_snapshot": {"n": NaN}}',
        "\udcff".encode("utf-8", "surrogatepass").decode("latin-1"),  # not UTF-8 JSON
        '{"output_snapshot": {}, "attempt": 99999999999999999999}',
        "",
    ],
)
def test_anything_that_cannot_be_compared_exits_2_with_one_line(tmp_path: Path, content: str) -> None:
    good = write(tmp_path, "good.json", {"output_snapshot": {"m": 1}})
    bad = tmp_path / "bad.json"
    bad.write_bytes(content.encode("latin-1", "replace") if content.startswith("\xed") else content.encode())
    for args in ((good, str(bad)), (str(bad), good)):
        r = invoke(*args)
        assert r.exit_code == 2, r.output
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("replaywatch: error:") and "bad.json" in lines[0], r.stderr
        assert "Traceback" not in r.output


def test_a_directory_or_missing_file_exits_2(tmp_path: Path) -> None:
    good = write(tmp_path, "good.json", {"output_snapshot": {"m": 1}})
    for path in (str(tmp_path), str(tmp_path / "missing.json")):
        r = invoke(good, path)
        assert r.exit_code == 2 and r.stderr.startswith("replaywatch: error:"), r.output


# policies, presets, tool changes in words, --explain
POLICY = """
[default]
tokens_tolerance = 0.01

[[rules]]
name = "anthropic-loose"
provider = "anthropic"
provider_version = "claude-*"
tokens_tolerance = 0.10
usage = "anthropic"
ignore = ["output_snapshot.meta.request_id", "output_snapshot.meta.reqid"]
"""


def _attempts(tmp_path: Path) -> tuple[str, str, str]:
    usage = {"input_tokens": 100, "output_tokens": 20}

    def doc(usage: dict[str, int], request_id: str, q: str) -> dict[str, object]:
        return {
            "run_id": "r",
            "step_id": "s",
            "provider": "anthropic",
            "output_snapshot": {"answer": "hi", "usage": usage, "meta": {"request_id": request_id}},
            "tool_events": [{"tool": "search", "args": {"q": q}}, {"tool": "fetch"}],
        }

    a = write(tmp_path, "a.json", doc(usage, "1", "x"))
    b = write(tmp_path, "b.json", doc(usage | {"output_tokens": 25}, "2", "y"))
    return a, b, write(tmp_path, "p.toml", POLICY)


def test_the_policy_of_the_current_attempt_applies(tmp_path: Path) -> None:
    a, b, policy = _attempts(tmp_path)
    r = invoke(a, b, "--policy", policy, "--provider-version", "claude-sonnet-4-5")
    out = json.loads(r.stdout)
    assert out["policy"] == "anthropic-loose" and out["token_delta"] == 5.0 and out["structure_equal"]
    assert out["tool_changes"] == {"added": 0, "removed": 0, "moved": 0, "changed": 1}
    r = invoke(a, b, "--policy", policy, "--provider", "openai")  # the default: no preset, a 1% tolerance
    out = json.loads(r.stdout)
    assert out["policy"] == "default" and out["token_delta"] is None and not out["structure_equal"]


def test_show_diff_says_the_tool_changes_in_words(tmp_path: Path) -> None:
    a, b, _ = _attempts(tmp_path)
    r = invoke(a, b, "--show-diff")
    assert r.exit_code == 1
    assert json.loads(r.stdout)["diff"]["changes"][0]["kind"] == "changed"
    assert "changed: tool 'search' at position 0: /args/q" in r.stderr


def test_explain_says_which_rule_decided_and_which_tolerance_applied(tmp_path: Path) -> None:
    a, b, policy = _attempts(tmp_path)
    r = invoke(a, b, "--policy", policy, "--provider-version", "claude-3", "--explain")
    lines = r.stderr.splitlines()
    assert lines[0] == "verdict: tool_event_divergence: tool events differ (attestation ids are equal)"
    assert lines[1].startswith("policy: anthropic-loose (settings ") and "usage preset anthropic" in lines[1]
    assert "tokens: 120 -> 125 (+5, +4.17%); tolerance 0.1 relative to the base: within" in lines
    assert "structure: equal (usage keys and ignored paths left out)" in lines
    assert "ignore rule 'output_snapshot.meta.reqid': matched nothing" in lines
    assert "ignore rule 'output_snapshot.meta.request_id': matched" in lines


def test_explain_names_the_paths_that_differ(tmp_path: Path) -> None:
    a = write(tmp_path, "a.json", {"output_snapshot": {"m": {"x": 1}, "tokens": 100}})
    b = write(tmp_path, "b.json", {"output_snapshot": {"m": {"x": 2}, "n": 1, "tokens": 150}})
    r = invoke(a, b, "--explain", "--tokens-tolerance", "0.1")
    lines = r.stderr.splitlines()
    assert lines[0] == "verdict: drift: drift in tokens, structure (attestation ids and tool events are equal)"
    assert "structure differs at: /m/x, /n" in lines
    assert "tokens: 100 -> 150 (+50, +50.00%); tolerance 0.1 relative to the base: OUTSIDE" in lines


def test_a_bad_policy_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    a, b, _ = _attempts(tmp_path)
    bad = write(tmp_path, "bad.toml", '[[rules]]\nname = "x"\nusage = "openia"\n')
    r = invoke(a, b, "--policy", bad)
    assert r.exit_code == 2
    assert r.stderr.strip().splitlines() == [
        f"replaywatch: error: policy file {bad}: rules[0].usage: Value error, unknown usage preset 'openia'; "
        "use one of reference, openai, gen_ai, gemini, bedrock, anthropic, all"
    ]
