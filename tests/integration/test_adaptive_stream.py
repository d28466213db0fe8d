"""Adaptive mode through Kafka, with nothing configured but REPLAYWATCH_ADAPTIVE: a fleet
of ten step kinds over three providers, each first re-run benignly, then regressions
among benign re-runs. The events say who decided and which envelope was crossed; false
alerts after the warm-up and missed regressions stay under their goals; and every
verdict is the one a pass over each partition in offset order gives (the envelopes
committed batch by batch are those learned at once)."""

from __future__ import annotations

from functools import partial
from typing import Any

import orjson
import pytest

from replaywatch import codec
from replaywatch.compare import CompareConfig
from replaywatch.core.projection import StepProjection, apply
from replaywatch.envelope.adaptive import ADAPTIVE, Adaptive
from replaywatch.envelope.model import EnvelopeSettings
from tests.conftest import Endpoints
from tests.corpus import REGRESSIONS, cohort_fleet
from tests.integration.streaming import Lane, attempt_event

pytestmark = pytest.mark.integration


async def test_a_zero_configuration_fleet_through_kafka(endpoints: Endpoints, pg_schema: str, bucket: str) -> None:
    fleet = cohort_fleet(kinds=10, warm=70, mixed=20, seed=21)
    lane = Lane(endpoints, pg_schema, bucket, partitions=2)
    lane.extra = {"adaptive": "true"}
    await lane.create_topics()
    label: dict[str, str] = {}
    events: list[dict[str, Any]] = []
    for r in fleet:
        run = f"{lane.tag}-{r.baseline.step_id}"
        label[run] = r.label
        spec = orjson.dumps({"type": r.kind}).decode()
        for a in (r.baseline, r.current):
            events.append(attempt_event(run, a.step_id, a.number, a.output_snapshot, a.tool_events,
                                        provider=r.provider, spec_snapshot=spec))  # fmt: skip
    await lane.send(events)
    async with lane.pipeline():
        outputs = await lane.outputs(want=len(fleet), timeout=180)
    assert len({o["event_id"] for o in outputs}) == len(fleet) == len(outputs)

    benign = [o for o in outputs if label[o["run_id"]] not in REGRESSIONS and o["regime"] == ADAPTIVE]
    regressions = [o for o in outputs if label[o["run_id"]] in REGRESSIONS]
    false = sum(o["verdict"] != "within_tolerance" for o in benign) / len(benign)
    caught = sum(o["verdict"] != "within_tolerance" for o in regressions) / len(regressions)
    assert len(benign) > 600 and len(regressions) > 150
    assert false <= 0.02 and caught >= 0.95, (false, caught)
    assert all(o["envelope"] and o["envelopes_crossed"] for o in regressions
               if o["regime"] == ADAPTIVE and o["verdict"] in ("drift", "tool_event_divergence"))  # fmt: skip
    assert {o["cohort"].rsplit("|", 1)[-1] for o in outputs} == {f"kind-{k}" for k in range(10)}

    # the oracle: each partition's records in offset order, through one pass
    records = await lane.read(lane.settings().input_topic, want=len(events))
    adaptive = Adaptive({}, EnvelopeSettings())
    config = CompareConfig(adaptive=True)
    limits = codec.Limits(kind_path="type")
    steps: dict[tuple[str, str], StepProjection] = {}
    expected: dict[str, tuple[str, str | None, str | None]] = {}
    for m in sorted(records, key=lambda m: (m.partition, m.offset)):
        a = codec.decode_attempt(m.value, limits)
        key = (a.run_id, a.step_id)
        proj = steps.get(key) or StepProjection.empty(*key)

        def judged(
            c: Any, b: Any, cu: Any, conf: Any, a: Any = a, at: tuple[int, int] = (m.partition, m.offset)
        ) -> Any:
            return adaptive.judge(at, a, c, b, cu, conf)

        steps[key], cs = apply(proj, a, config, partial(adaptive.judge, (m.partition, m.offset), a))
        expected.update((c.event_id, (c.verdict.value, c.regime, c.cohort)) for c in cs)
    assert {o["event_id"]: (o["verdict"], o["regime"], o["cohort"]) for o in outputs} == expected
