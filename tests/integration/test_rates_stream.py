"""Drift rates through Kafka over simulated hours of event time: one provider version's
drift rate doubles at a known time and is reverted later; the alert opens within two
windows of the change, resolves after the revert, names the cohort, and arrives as a
CloudEvent that the ``cloudevents`` SDK's Kafka binding decodes; the cohorts whose rate
did not change raise nothing. The rates topic carries every closed window."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
from cloudevents.core.formats.json import JSONFormat
from selenium.webdriver.common.by import By

from replaywatch import codec
from replaywatch.compare import CompareConfig
from replaywatch.core.projection import StepProjection, apply
from replaywatch.envelope.cohort import cohort_of
from replaywatch.rates.records import decode_rate
from replaywatch.rates.tally import LATE, RateKey, RatesSettings, Windows
from replaywatch.replay.backfill import backfill
from replaywatch.replay.jobs import ReplaySpec
from replaywatch.replay.rebuild import NoDiffs
from replaywatch.store.postgres import PostgresStore
from replaywatch.store.rates import RatesStore
from replaywatch.views.web import create_app, serving_web
from tests.conftest import Endpoints
from tests.integration.streaming import Lane, attempt_event, consuming, stop_proc
from tests.integration.test_web import browser, shoot

pytestmark = pytest.mark.integration

WINDOW = 300_000
"""The alert window (the default): 5 minutes."""
COHORTS = {
    ("openai", "gpt-a", "summarise"): "changes",
    ("openai", "gpt-a", "classify"): "steady",
    ("anthropic", "claude-x", "summarise"): "steady",
}
PER_WINDOW = 60
BASE_DRIFTED = 12
"""20% of each window's comparisons drift; 40% in the changed span."""
WINDOWS, CHANGE, REVERT = 30, 14, 22


def start_of_time() -> int:
    """Four hours ago, on an hour's boundary: the events' Kafka timestamps (now) are after them."""
    now = int(time.time() * 1000) - 4 * 3_600_000
    return now - now % 3_600_000


def fleet(lane: Lane, t0: int) -> list[dict[str, Any]]:
    """A step per comparison: its baseline attempt, then a re-run 1 s later that drifts or
    not, spread evenly over each window; in event-time order."""
    events: list[tuple[int, dict[str, Any]]] = []
    for (provider, version, kind), role in COHORTS.items():
        spec = orjson.dumps({"type": kind}).decode()
        for w in range(WINDOWS):
            drifted = 2 * BASE_DRIFTED if role == "changes" and CHANGE <= w < REVERT else BASE_DRIFTED
            for i in range(PER_WINDOW):
                at = t0 + w * WINDOW + i * (WINDOW // PER_WINDOW)
                run = f"{lane.tag}-{version}-{kind}-{w}-{i}"
                common = {"provider": provider, "provider_version": version, "spec_snapshot": spec}
                base = attempt_event(run, "s", 1, {"answer": "same"}, **common) | {"occurred_at": at}
                now = attempt_event(run, "s", 2, {"answer": "other" if i < drifted else "same"}, **common)
                events += [(at, base), (at + 1000, now | {"occurred_at": at + 1000})]
    events.sort(key=lambda e: e[0])
    # the tail: every partition's clock passes the last window by more than the lateness
    tail = t0 + (WINDOWS + 2) * WINDOW
    for i in range(16):
        events += [(tail, attempt_event(f"{lane.tag}-tail-{i}", "s", n, {}) | {"occurred_at": tail}) for n in (1, 2)]
    return [e for _, e in events]


async def judged_through(lane: Lane, until_ms: int, timeout: float = 240) -> None:
    conn = await asyncpg.connect(lane.endpoints.postgres_dsn)
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    judged = await conn.fetchval(f'SELECT judged_ms FROM "{lane.schema}".rate_cursor')
                except asyncpg.UndefinedTableError:
                    judged = None
                if judged is not None and judged >= until_ms:
                    return
                await asyncio.sleep(0.5)
    finally:
        await conn.close()


async def test_a_doubled_rate_opens_an_alert_that_resolves_after_the_revert(
    endpoints: Endpoints, pg_schema: str, bucket: str
) -> None:
    lane = Lane(endpoints, pg_schema, bucket, partitions=2)
    lane.extra = {"public_url": "http://rw.example", "cloudevents": "true"}
    await lane.create_topics()
    t0 = start_of_time()
    events = fleet(lane, t0)
    await lane.send(events)
    async with lane.pipeline():
        await judged_through(lane, t0 + (WINDOWS - 1) * WINDOW)
        s = lane.settings()
        alerts = await lane.read(s.alerts_topic, want=2, timeout=30, settle=3)
        rates = await lane.read(s.rates_topic, want=1, timeout=30, settle=3)
        (comparison, *_) = await lane.read(s.output_topic, want=1, timeout=30, settle=0)
    seen = await look(lane)
    printed = subprocess.run([sys.executable, "-m", "replaywatch", "rates"], env={**os.environ, **lane.env,
                             "COLUMNS": "80"}, capture_output=True, text=True, timeout=60)  # fmt: skip
    as_json = subprocess.run([sys.executable, "-m", "replaywatch", "rates", "--json"], env={**os.environ, **lane.env},
                             capture_output=True, text=True, timeout=60)  # fmt: skip

    decoded = [from_binary(KafkaMessage(dict(m.headers), m.key, m.value), JSONFormat()) for m in alerts]
    assert [e.get_type() for e in decoded] == ["dev.replaywatch.alert.opened", "dev.replaywatch.alert.resolved"]
    opened, resolved = (e.get_data() for e in decoded)
    assert isinstance(opened, dict) and isinstance(resolved, dict)
    assert opened["cohort"] == "openai|gpt-a|summarise" == decoded[0].get_extension("partitionkey")
    assert alerts[0].key == b"openai|gpt-a|summarise"
    assert decoded[0].get_subject() == "openai|gpt-a|summarise#default"
    assert decoded[0].get_source().startswith("/replaywatch/")
    assert decoded[0].get_id() != decoded[1].get_id()
    assert opened["alert_id"] == resolved["alert_id"]
    # within two windows of the change; resolved once the revert has held for two windows
    opened_window = (opened["window_start_ms"] - t0) // WINDOW
    resolved_window = (resolved["window_start_ms"] - t0) // WINDOW
    assert CHANGE <= opened_window <= CHANGE + 1, opened_window
    assert REVERT + 1 <= resolved_window <= REVERT + 3, resolved_window
    assert opened["rate"] == pytest.approx(0.4) and opened["reference_rate"] == pytest.approx(0.2)
    assert opened["q_value"] <= 0.001 < resolved["p_value"]
    at = decoded[0].get_time()
    assert at is not None and at.timestamp() * 1000 == opened["window_end_ms"]
    assert opened["links"]["comparisons"].startswith("http://rw.example/cohorts/openai%7Cgpt-a%7Csummarise/")

    # a comparison event with CloudEvents headers around its Avro value
    event = from_binary(KafkaMessage(dict(comparison.headers), comparison.key, comparison.value), JSONFormat())
    assert event.get_type().startswith("dev.replaywatch.comparison.")
    assert event.get_datacontenttype() == "application/avro"
    assert event.get_id() == codec.decode_comparison(comparison.value)["event_id"]

    # what on-call sees: the fleet page, the cohort's chart and its alert, the comparisons behind it
    assert {row.split()[0] for row in seen["fleet"]} == {"|".join(c) for c in COHORTS}
    assert seen["points"] == WINDOWS and seen["alert_spans"] == 1 and seen["reference_lines"] == 1
    assert len(seen["alerts"]) == 1 and "comparisons behind it" in seen["alerts"][0]
    assert len(seen["behind"]) == 2 * BASE_DRIFTED and all("drift" in row for row in seen["behind"])
    assert seen["drifting"][0].startswith("s ") and "/answer" in seen["drifting"][0]
    assert seen["screenshot"].stat().st_size > 10_000
    # and in a terminal: 80 columns, no alert open any more (exit 1), and JSON for scripts
    assert printed.returncode == 1, printed.stderr
    assert "openai|gpt-a|summarise" in printed.stdout and max(map(len, printed.stdout.splitlines())) <= 80
    doc = orjson.loads(as_json.stdout)
    assert doc["open_alerts"] == [] and {c["cohort"] for c in doc["cohorts"]} >= {
        "openai|gpt-a|summarise", "openai|gpt-a|classify", "anthropic|claude-x|summarise"}  # fmt: skip

    # the rates topic: every closed window of every width, once (version 1: nothing came late)
    records = [decode_rate(m.value) for m in rates]
    by_key = {(r["cohort"], r["width_seconds"], r["window_start"]): r for r in records}
    assert len(by_key) == len(records)
    assert {r["version"] for r in records} == {1}
    five = [r for r in records if r["cohort"] == "openai|gpt-a|summarise" and r["width_seconds"] == 300]
    assert len(five) == WINDOWS
    assert all(r["comparisons"] == PER_WINDOW for r in five)
    changed = {(r["window_start"] - t0) // WINDOW for r in five if r["drift"] == 2 * BASE_DRIFTED}
    assert changed == set(range(CHANGE, REVERT))
    assert all(r["causes"]["structure"] == r["drift"] for r in five)
    minutes = [r for r in records if r["cohort"] == "anthropic|claude-x|summarise" and r["width_seconds"] == 60]
    assert len(minutes) == WINDOWS * 5 and sum(r["comparisons"] for r in minutes) == WINDOWS * PER_WINDOW
    hours = [r for r in records if r["width_seconds"] == 3600 and r["cohort"] == "openai|gpt-a|classify"]
    assert [r["comparisons"] for r in hours] == [12 * PER_WINDOW, 12 * PER_WINDOW]


async def look(lane: Lane) -> dict[str, Any]:
    """The web view over the lane, in headless Chromium."""
    s, e = lane.settings(), lane.endpoints
    store = await PostgresStore.connect(e.postgres_dsn, schema=lane.schema, group_id=s.group_id, topic=s.input_topic,
                                        read_only=True)  # fmt: skip
    try:
        async with serving_web(create_app(store.history, NoDiffs()), "127.0.0.1", 0) as port:
            return await asyncio.to_thread(browse, f"http://127.0.0.1:{port}")
    finally:
        await store.close()


def browse(base: str) -> dict[str, Any]:
    b = browser()
    seen: dict[str, Any] = {}
    try:
        b.get(f"{base}/rates")
        seen["fleet"] = [r.text for r in b.find_elements(By.CSS_SELECTOR, "#rates tr")][1:]
        shoot(b, "rates")
        b.find_element(By.LINK_TEXT, "openai|gpt-a|summarise").click()
        seen["points"] = len(b.find_elements(By.CSS_SELECTOR, "#chart circle"))
        seen["alert_spans"] = len(b.find_elements(By.CSS_SELECTOR, "#chart rect.alert"))
        seen["reference_lines"] = len(b.find_elements(By.CSS_SELECTOR, "#chart line.reference"))
        seen["alerts"] = [r.text for r in b.find_elements(By.CSS_SELECTOR, "#cohort-alerts tr")][1:]
        seen["drifting"] = [r.text for r in b.find_elements(By.CSS_SELECTOR, "#drifting tr")][1:]
        seen["screenshot"] = shoot(b, "cohort-rates")
        b.find_element(By.LINK_TEXT, "comparisons behind it").click()
        seen["behind"] = [r.text for r in b.find_elements(By.CSS_SELECTOR, "table tr")][1:]
    finally:
        b.quit()
    return seen


def timeline(lane: Lane, t0: int, minutes: int, prefix: str) -> list[dict[str, Any]]:
    """Three steps every 10 s of event time, each a baseline and a re-run that drifts one
    time in four; every 30th step's attempts come 90 s late (inside the lateness), every
    45th's 10 minutes late (outside it)."""
    events: list[dict[str, Any]] = []
    for n in range(minutes * 18):
        at = t0 + (n // 3) * 10_000
        if n % 30 == 29:
            at -= 90_000
        elif n % 45 == 44:
            at -= 600_000
        run = f"{lane.tag}-{prefix}-{n}"
        common = {"provider": "openai", "provider_version": f"v{n % 2}", "spec_snapshot": '{"type": "plan"}'}
        events.append(attempt_event(run, "s", 1, {"a": 1}, **common) | {"occurred_at": at})
        events.append(attempt_event(run, "s", 2, {"a": 1 + (n % 4 == 0)}, **common) | {"occurred_at": at + 500})
    return events


def recount(phases: list[list[Any]], settings: RatesSettings) -> tuple[dict[RateKey, list[int]], int]:
    """The windows counted at once from the input records, each phase read by a consumer
    of its own (fresh clocks) in offset order per partition, the steps shared: what the
    pipeline must have committed whatever its restarts. Also: the comparisons late."""
    steps: dict[tuple[str, str], StepProjection] = {}
    totals: dict[RateKey, list[int]] = {}
    config, limits = CompareConfig(), codec.Limits(kind_path="type")
    for records in phases:
        windows = Windows(settings, {})
        for m in sorted(records, key=lambda m: (m.partition, m.offset)):
            a = codec.decode_attempt(m.value, limits)
            key = (a.run_id, a.step_id)
            steps[key], cs = apply(steps.get(key) or StepProjection.empty(*key), a, config)
            for c in cs:
                cohort = cohort_of(a.provider, a.provider_version, a.kind, c.policy)
                windows.add(m.partition, a.occurred_at_ms, m.timestamp, cohort, c.policy, c)
        for k, counts in windows.deltas.items():
            totals[k] = [x + y for x, y in zip(totals.get(k, [0] * len(counts)), counts, strict=True)]
    return totals, sum(c[LATE] for c in totals.values())


async def live_committed(lane: Lane, total: int, timeout: float = 60) -> None:
    """Wait until the live group's stored offsets add up to ``total``."""
    conn = await asyncpg.connect(lane.endpoints.postgres_dsn)
    try:
        async with asyncio.timeout(timeout):
            while await conn.fetchval(f'SELECT coalesce(sum(next_offset), 0) FROM "{lane.schema}".consumer_offset '
                                      "WHERE group_id = $1", lane.settings().group_id) < total:  # fmt: skip
                await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def stored_windows(lane: Lane) -> dict[RateKey, list[int]]:
    conn = await asyncpg.connect(lane.endpoints.postgres_dsn)
    try:
        rows = await conn.fetch(f'SELECT cohort, policy, start_ms, counts FROM "{lane.schema}".rate_window')
    finally:
        await conn.close()
    return {(r["cohort"], r["policy"], r["start_ms"]): list(r["counts"]) for r in rows}


async def test_windows_equal_a_recount_after_kills_restarts_a_backfill_and_late_events(
    endpoints: Endpoints, pg_schema: str, bucket: str, tmp_path: Path
) -> None:
    lane = Lane(endpoints, pg_schema, bucket, partitions=2)
    lane.extra = {"batch_size": 50}
    await lane.create_topics()
    t0 = start_of_time()
    first = timeline(lane, t0, 40, "a")
    await lane.send(first)
    for past in (len(first) // 4, len(first) // 2):  # killed twice mid-stream
        proc = lane.spawn()
        await lane.committed_past(past)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    with (tmp_path / "third.log").open("wb") as log:  # the killed one before it may have read the rest
        proc = lane.spawn(stderr=log)
    await consuming(tmp_path / "third.log")
    await lane.committed_past(len(first) - 1)
    assert stop_proc(proc)[0] == 0

    # more records, read only by a backfill of the whole topic, then by the live consumer
    second = timeline(lane, t0 + 40 * 60_000, 20, "b")
    await lane.send(second)
    summary = await backfill(lane.settings(), ReplaySpec(), asyncio.Event())
    assert summary["state"] == "done" and summary["compared"] == len(second) // 2
    proc = lane.spawn()
    await live_committed(lane, len(first) + len(second))
    assert stop_proc(proc)[0] == 0

    records = await lane.read(lane.settings().input_topic, want=len(first) + len(second))
    ids = {e["event_id"] for e in first}
    phase_one = [m for m in records if codec.decode_attempt(m.value).event_id in ids]
    phase_two = [m for m in records if codec.decode_attempt(m.value).event_id not in ids]
    expected, late = recount([phase_one, phase_two], lane.settings().rates_settings())
    assert late > 0 and sum(c[0] for c in expected.values()) + late == (len(first) + len(second)) // 2
    assert await stored_windows(lane) == expected


async def test_one_closer_at_a_time_and_the_lock_is_given_back(endpoints: Endpoints, pg_schema: str) -> None:
    store = await PostgresStore.connect(endpoints.postgres_dsn, schema=pg_schema, group_id="g", topic="t", pool_size=3)
    try:
        await store.migrate()
        first, second = RatesStore(store.pool, pg_schema, "g", "t"), RatesStore(store.pool, pg_schema, "g", "t")
        assert await first.lead() and await first.lead()  # taken, then still held
        assert not await second.lead()
        await first.resign()
        assert await second.lead()
        async with store.pool.acquire() as conn:  # what first gave back holds no lock
            assert await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                       "AND pid = pg_backend_pid()") == 0  # fmt: skip
        await second.resign()
    finally:
        await store.close()
