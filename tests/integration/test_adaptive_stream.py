"""Adaptive mode through Kafka, with nothing configured but REPLAYWATCH_ADAPTIVE: a fleet
of ten step kinds over three providers, each first re-run benignly, then regressions
among benign re-runs. The events say who decided and which envelope was crossed; false
alerts after the warm-up and missed regressions stay under their goals; and every
verdict is the one a pass over each partition in offset order gives (the envelopes
committed batch by batch are those learned at once)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tomllib
from collections import Counter
from typing import Any
from urllib.parse import quote

import aiohttp
import asyncpg
import orjson
import pytest

from replaywatch import codec
from replaywatch.compare import CompareConfig, compare_attempts, policy
from replaywatch.core.projection import StepProjection, apply
from replaywatch.envelope.adaptive import ADAPTIVE, WARMUP, Adaptive
from replaywatch.envelope.model import CohortEnvelope, EnvelopeSettings
from replaywatch.replay.backfill import backfill
from replaywatch.replay.jobs import ReplaySpec
from replaywatch.replay.rebuild import NoDiffs
from replaywatch.store.postgres import PostgresStore
from replaywatch.views.web import create_app, serving_web
from tests.conftest import Endpoints
from tests.corpus import REGRESSIONS, cohort_fleet
from tests.integration.streaming import Lane, attempt_event, stop_proc

pytestmark = pytest.mark.integration


async def test_a_zero_configuration_fleet_through_kafka(endpoints: Endpoints, pg_schema: str, bucket: str) -> None:
    fleet = cohort_fleet(kinds=10, warm=70, mixed=20, seed=21)
    lane = Lane(endpoints, pg_schema, bucket, partitions=2)
    lane.extra = {"adaptive": "true"}
    await lane.create_topics()
    events, label = fleet_events(lane, fleet)
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
    # beside it, the same benign re-runs under exact equality: nearly all alert
    pairs = {f"{lane.tag}-{r.baseline.step_id}": r for r in fleet}
    exact = [compare_attempts(pairs[o["run_id"]].baseline, pairs[o["run_id"]].current, CompareConfig()) for o in benign]
    assert sum(c.verdict.value != "within_tolerance" for c in exact) > 0.9 * len(benign)
    assert all(o["envelope"] and o["envelopes_crossed"] for o in regressions
               if o["regime"] == ADAPTIVE and o["verdict"] in ("drift", "tool_event_divergence"))  # fmt: skip
    assert {o["cohort"].rsplit("|", 1)[-1] for o in outputs} == {f"kind-{k}" for k in range(10)}

    # every verdict is the one a pass over each partition in offset order gives
    assert {o["event_id"]: (o["verdict"], o["regime"], o["cohort"]) for o in outputs} == await oracle(lane, len(events))


def fleet_events(lane: Lane, fleet: list[Any], prefix: str = "") -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The fleet's attempt events (provider and kind in the spec), and each run's label;
    runs are named after the lane, ``prefix`` and the step."""
    label: dict[str, str] = {}
    events: list[dict[str, Any]] = []
    for r in fleet:
        run = f"{lane.tag}-{prefix}{r.baseline.step_id}"
        label[run] = r.label
        spec = orjson.dumps({"type": r.kind}).decode()
        for a in (r.baseline, r.current):
            events.append(attempt_event(run, a.step_id, a.number, a.output_snapshot, a.tool_events,
                                        provider=r.provider, spec_snapshot=spec))  # fmt: skip
    return events, label


async def stored_envelopes(lane: Lane) -> dict[tuple[int, str], str]:
    conn = await asyncpg.connect(lane.endpoints.postgres_dsn)
    try:
        rows = await conn.fetch(f'SELECT partition, cohort, state::text AS s FROM "{lane.schema}".envelope')
    finally:
        await conn.close()
    return {(r["partition"], r["cohort"]): CohortEnvelope.from_json(r["s"]).to_json() for r in rows}


def cli(lane: Lane, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **lane.env, "COLUMNS": "80"}
    return subprocess.run([sys.executable, "-m", "replaywatch", *args], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


async def test_sigkills_a_backfill_into_a_fresh_schema_and_an_operator_reset(
    endpoints: Endpoints, bucket: str, pg_schemas: Any
) -> None:
    """The same fleet, watched by a consumer SIGKILLed again and again (small batches):
    each comparison said once, with the verdict one pass gives. A backfill into a fresh
    schema says the same verdicts and leaves the same envelopes, byte for byte. Then an
    operator resets one kind's cohorts: the action is recorded, the next comparisons of
    those cohorts warm up again (the others do not), and the volatility report and its
    suggestion are there at 80 columns, as is the web view's cohort page."""
    live = Lane(endpoints, await pg_schemas(), bucket, partitions=2)
    live.extra = {"adaptive": "true", "batch_size": "40"}
    await live.create_topics()
    fresh = Lane(endpoints, await pg_schemas(), bucket, partitions=2)
    fresh.extra = {"adaptive": "true", "input_topic": live.settings().input_topic}
    await fresh.create_topics()
    fleet = cohort_fleet(kinds=4, warm=70, mixed=20, seed=31)
    events, _ = fleet_events(live, fleet)
    await live.send(events)

    kills = 0
    while await live.stored_total() < len(events):
        proc = live.spawn(stderr=subprocess.DEVNULL)
        before = await live.stored_total()
        await live.committed_past(min(before + 300, len(events) - 1), timeout=120)
        if proc.poll() is None and await live.stored_total() < len(events):
            proc.send_signal(signal.SIGKILL)
            kills += 1
        else:
            stop_proc(proc)
        await asyncio.to_thread(proc.wait, 30)
    proc = live.spawn(stderr=subprocess.DEVNULL)  # publishes what the last one committed
    outputs = await live.outputs(want=len(fleet), timeout=120)
    stop_proc(proc)
    assert kills >= 3
    said = Counter(o["event_id"] for o in outputs)
    assert set(said.values()) == {1} and len(said) == len(fleet)
    verdicts = {o["event_id"]: (o["verdict"], o["regime"], o["cohort"]) for o in outputs}
    assert verdicts == await oracle(live, len(events))

    summary = await backfill(fresh.settings(), ReplaySpec(), asyncio.Event())
    assert summary["state"] == "done" and summary["published"] == len(fleet)
    again = {o["event_id"]: (o["verdict"], o["regime"], o["cohort"]) for o in await fresh.outputs(want=len(fleet))}
    assert again == verdicts
    assert await stored_envelopes(fresh) == await stored_envelopes(live)

    # an operator resets kind-1's cohorts; more of the fleet's re-runs arrive
    done = cli(live, "baseline", "reset", "--cohort", "*|kind-1", "--reason", "prompt change")
    assert done.returncode == 0 and "reset #" in done.stdout, done.stderr
    listed = [orjson.loads(line) for line in cli(live, "baseline", "list").stdout.splitlines()]
    assert [(a["action"], a["cohort"], a["reason"]) for a in listed] == [("reset", "*|kind-1", "prompt change")]
    assert listed[0]["by_user"] and listed[0]["effective"]
    more = [r for r in cohort_fleet(kinds=4, warm=0, mixed=10, seed=32) if r.label not in REGRESSIONS]
    more_events, _ = fleet_events(live, more, prefix="more-")
    await live.send(more_events)
    async with live.pipeline():
        outputs = await live.outputs(want=len(fleet) + len(more), timeout=120)
    new = [o for o in outputs if o["event_id"] not in verdicts]
    assert len(new) == len(more)
    assert {o["regime"] for o in new if o["cohort"].endswith("|kind-1")} == {WARMUP}
    assert {o["regime"] for o in new if not o["cohort"].endswith("|kind-1")} == {ADAPTIVE}

    report = cli(live, "report", "--volatility")
    assert report.returncode == 0, report.stderr
    lines = report.stdout.splitlines()
    assert max(map(len, lines)) <= 80 and sum("kind-" in line for line in lines) == 12
    suggested = cli(live, "report", "--volatility", "--suggest", "--cohort", "openai|*")
    assert suggested.returncode == 0 and suggested.stdout.count("[[rules]]") == 4
    policy.parse(tomllib.loads(suggested.stdout), CompareConfig())

    s = live.settings()
    store = await PostgresStore.connect(endpoints.postgres_dsn, schema=live.schema, group_id=s.group_id,
                                        topic=s.input_topic, read_only=True)  # fmt: skip
    try:
        async with serving_web(create_app(store.history, NoDiffs()), "127.0.0.1", 0) as port, \
                aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:  # fmt: skip
            async with http.get("/cohorts") as r:
                listing = (r.status, await r.text())
            async with http.get("/cohorts/" + quote("openai|-|kind-2", safe="")) as r:
                one = (r.status, await r.text())
    finally:
        await store.close()
    assert listing[0] == 200 and listing[1].count('href="/cohorts/') == 12
    assert one[0] == 200 and "[[rules]]" in one[1] and "flake rate" in one[1]


async def oracle(lane: Lane, n: int) -> dict[str, tuple[str, str | None, str | None]]:
    """Each comparison's (verdict, regime, cohort) from one pass over each partition of
    the lane's input topic in offset order."""
    records = await lane.read(lane.settings().input_topic, want=n)
    adaptive = Adaptive({}, EnvelopeSettings())
    config = CompareConfig(adaptive=True)
    limits = codec.Limits(kind_path="type")
    steps: dict[tuple[str, str], StepProjection] = {}
    out: dict[str, tuple[str, str | None, str | None]] = {}
    for m in sorted(records, key=lambda m: (m.partition, m.offset)):
        a = codec.decode_attempt(m.value, limits)
        key = (a.run_id, a.step_id)
        proj = steps.get(key) or StepProjection.empty(*key)
        steps[key], cs = apply(proj, a, config, adaptive.of((m.partition, m.offset), a))
        out.update((c.event_id, (c.verdict.value, c.regime, c.cohort)) for c in cs)
    return out
