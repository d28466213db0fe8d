"""Comparators through Kafka: a fleet of LLM steps (the corpus's pairs) under the worked
policy; every event carries its structure score and deciding paths, as the engine says
offline; a re-scoring under a stricter semantic threshold publishes exactly the pairs
whose verdict that changes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from replaywatch.compare import CompareConfig, compare_attempts, policy
from replaywatch.replay.jobs import ReplaySpec
from replaywatch.replay.rescore import rescore
from tests.conftest import Endpoints
from tests.corpus import corpus
from tests.integration.streaming import Lane, attempt_event

pytestmark = pytest.mark.integration

WORKED = Path(__file__).resolve().parents[2] / "docs" / "policies" / "llm-steps.toml"


def events_of(pairs: list[Any], tag: str) -> list[dict[str, Any]]:
    out = []
    for p in pairs:
        for a in (p.baseline, p.current):
            out.append(attempt_event(f"{tag}-{a.step_id}", a.step_id, a.number, a.output_snapshot, a.tool_events,
                                     provider=p.provider))  # fmt: skip
    return out


async def test_a_fleet_under_comparators_and_a_rescoring_under_a_stricter_threshold(
    endpoints: Endpoints, pg_schema: str, bucket: str, tmp_path: Path
) -> None:
    pairs = corpus(seed=11, per_kind=4)
    lane = Lane(endpoints, pg_schema, bucket)
    lane.extra = {"policy_file": str(WORKED)}
    await lane.create_topics()
    live = policy.load(WORKED, CompareConfig())
    expected = {}
    for p in pairs:
        c = compare_attempts(p.baseline._replace(run_id=f"{lane.tag}-{p.baseline.step_id}"),
                             p.current._replace(run_id=f"{lane.tag}-{p.current.step_id}"), live)  # fmt: skip
        expected[c.event_id] = c
    await lane.send(events_of(pairs, lane.tag))
    async with lane.pipeline():
        outputs = await lane.outputs(want=len(expected))
    assert {o["event_id"] for o in outputs} == set(expected)
    for o in outputs:
        c = expected[o["event_id"]]
        assert (o["verdict"], o["deciding_paths"]) == (c.verdict.value, list(c.deciding_paths))
        assert o["structure_score"] == pytest.approx(c.structure_score)
    refusals = [o for o in outputs if any(p.endswith(("/content", "/text")) for p in o["deciding_paths"])]
    assert refusals and all(o["verdict"] == "drift" and o["structure_score"] < 0.55 for o in refusals)
    assert any(o["verdict"] == "within_tolerance" and 0 < o["structure_score"] < 1 for o in outputs)

    stricter = tmp_path / "stricter.toml"
    stricter.write_text(WORKED.read_text().replace("threshold = 0.55", "threshold = 0.97"))
    new = policy.load(stricter, CompareConfig())
    flipped = {i for i, c in expected.items()
               if compare_attempts_again(pairs, lane.tag, c, new).verdict is not c.verdict}  # fmt: skip
    assert flipped
    summary = await rescore(lane.settings(), lane.settings().model_copy(update={"policy_file": stricter}),
                            ReplaySpec(), asyncio.Event(), apply=True, report_path=None)  # fmt: skip
    assert summary["state"] == "done" and summary["flipped"] == summary["published"] == len(flipped)
    corrections = [o for o in await lane.outputs(want=len(expected) + len(flipped)) if o["supersedes"]]
    assert {o["supersedes"] for o in corrections} == flipped
    assert all(o["verdict"] == "drift" and o["deciding_paths"] for o in corrections)


def compare_attempts_again(pairs: list[Any], tag: str, c: Any, config: CompareConfig) -> Any:
    p = next(p for p in pairs if p.baseline.step_id == c.step_id)
    return compare_attempts(p.baseline._replace(run_id=f"{tag}-{p.baseline.step_id}"),
                            p.current._replace(run_id=f"{tag}-{p.current.step_id}"), config)  # fmt: skip
