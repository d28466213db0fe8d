"""Policies through the real stack: a fleet of two providers under a policy file."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from replaywatch import demo
from replaywatch.compare import comparison_id
from tests.conftest import Endpoints
from tests.integration.streaming import Lane

pytestmark = pytest.mark.integration

NOW = 1_790_000_000_000
POLICY = """
[default]
tokens_tolerance = 0.01
cost_tolerance = 0.01
ignore = ["output_snapshot.meta.request_id"]

[[rules]]
name = "anthropic-loose"
provider = "anthropic"
provider_version = "claude-sonnet-*"
tokens_tolerance = 0.10
usage = "anthropic"
ignore = ["output_snapshot.meta.request_id", "output_snapshot.meta.requestId"]

[[rules]]
name = "openai-strict"
provider = "openai"
usage = "openai"
"""


def attempt(run: str, step: str, n: int, provider: str, version: str, snapshot: Any, tools: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()), "run_id": run, "step_id": step, "attempt": n, "status": "succeeded",
        "occurred_at": NOW + n, "output_snapshot": orjson.dumps(snapshot).decode(),
        "tool_events": orjson.dumps(tools).decode(), "provider": provider, "provider_version": version,
    }  # fmt: skip


def fleet(tag: str, runs: int) -> list[dict[str, Any]]:
    """Each run: one step on Anthropic and one on OpenAI, each retried once with 5% more
    output tokens (in the provider's own usage block) and a new request id; the planner
    step also calls one more tool."""
    events = []
    for r in range(runs):
        run = f"run-{tag}-{r}"
        for n, extra in ((1, 0), (2, 5)):
            anthropic = {
                "answer": "Paris",
                "meta": {"request_id": f"req-{r}-{n}"},
                "usage": {"input_tokens": 20, "output_tokens": 80 + extra, "cache_read_input_tokens": 0},
            }
            openai = {"answer": "Paris", "meta": {"request_id": f"req-{r}-{n}"},
                      "usage": {"prompt_tokens": 20, "completion_tokens": 80 + extra, "total_tokens": 100 + extra,
                                "completion_tokens_details": {"reasoning_tokens": extra}}}  # fmt: skip
            tools = [{"tool": "search", "args": {"q": "capital of France"}}] + ([{"tool": "cite"}] if n == 2 else [])
            events.append(attempt(run, "summarise", n, "anthropic", "claude-sonnet-4-5", anthropic, tools[:1]))
            events.append(attempt(run, "plan", n, "openai", "gpt-4o-2024-08-06", openai, tools))
    return events


@pytest.fixture
def lane(endpoints: Endpoints, pg_schema: str, bucket: str, tmp_path: Path) -> Lane:
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    return Lane(endpoints, pg_schema, bucket, extra={"policy_file": str(policy)})


async def test_two_providers_under_their_policies(lane: Lane) -> None:
    runs = 30
    events = fleet(lane.tag, runs)
    config = lane.settings().compare_config()
    await lane.create_topics()
    await lane.send(events)
    async with lane.pipeline():
        out = await lane.outputs(want=2 * runs)
    assert len(out) == 2 * runs
    by_step: dict[str, list[dict[str, Any]]] = {}
    for ev in out:
        by_step.setdefault(ev["step_id"], []).append(ev)

    # the looser policy: within its 10%, under its preset (5 of 100 tokens, no structural change)
    for ev in by_step["summarise"]:
        assert (ev["verdict"], ev["policy"], ev["token_delta"], ev["structure_equal"]) == (
            "within_tolerance", "anthropic-loose", 5.0, True)  # fmt: skip
        assert ev["tolerance_tokens"] == 0.10
    # the other: drift beyond 1%, and the reasoning-token detail is usage, not structure;
    # the tool events gained one call, and say so
    for ev in by_step["plan"]:
        assert (ev["verdict"], ev["policy"], ev["token_delta"], ev["structure_equal"]) == (
            "tool_event_divergence", "openai-strict", 5.0, True)  # fmt: skip
        assert not ev["tokens_within"] and ev["tolerance_tokens"] == 0.01
        counts = (
            ev["tool_events_added"],
            ev["tool_events_removed"],
            ev["tool_events_moved"],
            ev["tool_events_changed"],
        )
        assert counts == (1, 0, 0, 0)
    prints = {ev["policy"]: ev["settings_fingerprint"] for ev in out}
    assert prints == {
        "anthropic-loose": config.select("anthropic", "claude-sonnet-4-5", "summarise").settings_fingerprint,
        "openai-strict": config.select("openai", "gpt-4o", "plan").settings_fingerprint,
    }
    assert len(set(prints.values())) == 2
    # the same as the pure engine says, event for event
    assert {ev["event_id"]: ev["verdict"] for ev in out} == demo.expected_comparisons(events, config)
    assert {ev["event_id"] for ev in out} == {comparison_id(f"run-{lane.tag}-{r}", s, 1, 2)
                                              for r in range(runs) for s in ("summarise", "plan")}  # fmt: skip

    # each ignore rule's matches, stored for `report --rules`; the mistyped one matched nothing
    conn = await asyncpg.connect(lane.endpoints.postgres_dsn)
    try:
        rows = await conn.fetch(f'SELECT policy, rule, comparisons, matches FROM "{lane.schema}".ignore_rule_stats')
    finally:
        await conn.close()
    assert {(r["policy"], r["rule"]): (r["comparisons"], r["matches"]) for r in rows} == {
        ("anthropic-loose", "output_snapshot.meta.request_id"): (runs, runs),
        ("anthropic-loose", "output_snapshot.meta.requestId"): (runs, 0),
        ("openai-strict", "output_snapshot.meta.request_id"): (runs, runs),  # from the default
    }
    # and `replaywatch report --rules` prints them
    env = {**os.environ, **lane.env, "COLUMNS": "200"}
    report = subprocess.run([sys.executable, "-m", "replaywatch", "report", "--rules"], env=env, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    assert report.returncode == 0, report.stderr
    lines = [" ".join(line.replace("│", " ").split()) for line in report.stdout.splitlines()]
    assert f"anthropic-loose output_snapshot.meta.requestId {runs} 0 0.0%" in lines
    assert f"anthropic-loose output_snapshot.meta.request_id {runs} {runs} 100.0%" in lines
