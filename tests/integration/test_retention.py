"""Retention: pruning runs beside the live consumer, in small transactions, and holds
what the README promises. History and projections past their retention go (their age
is set here as time would set it); what is younger stays; the consumer goes on
comparing; a step whose projection was pruned starts a new pair with its next attempt;
a backfill over the pruned range may say again what was said (documented), and says
nothing twice beside what was kept."""

from __future__ import annotations

import asyncio
from collections import Counter

import asyncpg
import pytest

from replaywatch import demo
from replaywatch.replay.backfill import backfill
from replaywatch.replay.jobs import ReplaySpec
from replaywatch.store.postgres import PostgresStore
from replaywatch.store.retention import Retention, prune_once
from tests.conftest import Endpoints
from tests.faults.harness import expected_for
from tests.integration.streaming import Lane, attempt_event

pytestmark = pytest.mark.integration


async def age(endpoints: Endpoints, schema: str, run_prefix: str, days: int) -> None:
    """What ``days`` of time would do to the rows of these runs."""
    conn = await asyncpg.connect(endpoints.postgres_dsn)
    try:
        for table, column in (("comparison", "detected_at"), ("step_projection", "updated_at")):
            await conn.execute(
                f'UPDATE "{schema}".{table} SET {column} = {column} - make_interval(days => $1) '
                "WHERE run_id LIKE $2",
                days, run_prefix + "%",
            )  # fmt: skip
    finally:
        await conn.close()


async def counts(endpoints: Endpoints, schema: str) -> dict[str, int]:
    conn = await asyncpg.connect(endpoints.postgres_dsn)
    try:
        return {t: int(await conn.fetchval(f'SELECT count(*) FROM "{schema}".{t}'))
                for t in ("comparison", "step_projection")}  # fmt: skip
    finally:
        await conn.close()


async def test_pruning_beside_the_live_consumer_keeps_its_promises(
    endpoints: Endpoints, pg_schema: str, bucket: str
) -> None:
    lane = Lane(endpoints, pg_schema, bucket)
    lane.extra = {"retain_comparisons_days": 30, "retain_steps_days": 10, "prune_every_seconds": 0.5}
    await lane.create_topics()
    old = [e | {"run_id": "old-" + e["run_id"]} for e in demo.synthetic_fleet(demo.FleetSpec(runs=8, seed=91))]
    new = [e | {"run_id": "new-" + e["run_id"]} for e in demo.synthetic_fleet(demo.FleetSpec(runs=8, seed=92))]
    said_old, said_new = expected_for(old, lane), expected_for(new, lane)
    await lane.send(old + new)
    async with lane.pipeline() as pipeline:
        await lane.committed_past(len(old) + len(new) - 1)
        before = await counts(endpoints, pg_schema)
        await age(endpoints, pg_schema, "old-", 45)  # the old runs are 45 days old
        async with asyncio.timeout(30):  # the consumer's own pruning takes them
            while (await counts(endpoints, pg_schema))["comparison"] > len(said_new):
                await asyncio.sleep(0.2)
        after = await counts(endpoints, pg_schema)
        assert after["comparison"] == len(said_new) and before["comparison"] == len(said_old) + len(said_new)
        assert after["step_projection"] == len({(e["run_id"], e["step_id"]) for e in new})
        # the consumer goes on: a new attempt of a pruned step starts a new pair; of a kept one, compares
        pruned_step, kept_step = old[0], new[0]
        more = [attempt_event(pruned_step["run_id"], pruned_step["step_id"], 50, {"v": 1}),
                attempt_event(kept_step["run_id"], kept_step["step_id"], 50, {"v": 1})]  # fmt: skip
        await lane.send(more)
        await lane.committed_past(len(old) + len(new) + 1)
        assert pipeline.checkpoint.processed == len(old) + len(new) + 2
    outputs = await lane.outputs(want=len(said_old) + len(said_new) + 1)
    assert Counter(o["event_id"] for o in outputs).most_common(1)[0][1] == 1
    late = [o for o in outputs if o["current_attempt"] == 50]
    assert [(o["run_id"], o["baseline_attempt"]) for o in late] == [(kept_step["run_id"], 1)]

    # a backfill of the whole range: the pruned runs' pairs may be said again (their history
    # is gone), the kept ones never
    summary = await backfill(lane.settings(), ReplaySpec(), asyncio.Event())
    assert summary["state"] == "done"
    again = await lane.outputs(want=len(outputs) + 1, timeout=20)
    repeated = Counter(o["event_id"] for o in again)
    assert all(repeated[i] == 1 for i in said_new)
    assert {i for i, n in repeated.items() if n > 1} <= set(said_old)


async def test_prune_once_deletes_in_batches_and_only_what_is_past_retention(
    endpoints: Endpoints, migrated_store: PostgresStore, pg_schema: str
) -> None:
    conn = await asyncpg.connect(endpoints.postgres_dsn)
    try:
        await conn.execute(
            f'INSERT INTO "{pg_schema}".comparison (event_id, run_id, step_id, baseline_attempt, current_attempt, '
            "verdict, detected_at) SELECT gen_random_uuid(), 'r', 's' || i, 1, 2, 'drift', "
            "now() - make_interval(days => CASE WHEN i < 2500 THEN 40 ELSE 1 END) FROM generate_series(0, 2999) i"
        )
    finally:
        await conn.close()
    deleted = await prune_once(migrated_store, Retention(comparisons_days=30), batch=1000)
    assert deleted == {"comparison": 2500}
    assert await prune_once(migrated_store, Retention()) == {}  # nothing kept forever is pruned
    assert (await counts(endpoints, pg_schema))["comparison"] == 500
    with pytest.raises(ValueError):
        await migrated_store.prune("outbox; DROP", "x", 1, 1)


async def test_the_rates_are_pruned_by_their_event_time(
    endpoints: Endpoints, pg_schema: str, migrated_store: PostgresStore
) -> None:
    conn = await asyncpg.connect(endpoints.postgres_dsn)
    try:
        now = int(await conn.fetchval("SELECT (extract(epoch FROM now()) * 1000)::bigint"))
        day = 86_400_000
        await conn.execute(
            f'INSERT INTO "{pg_schema}".rate_window (topic, cohort, policy, start_ms, counts, seq) '
            "SELECT 't', 'c', 'p', $1::bigint - i * $2::bigint, '{1,1}', i FROM generate_series(1, 20) i", now, day,
        )  # fmt: skip
        await conn.execute(
            f'INSERT INTO "{pg_schema}".rate_published (topic, cohort, policy, width_ms, start_ms, version, counts) '
            "SELECT 't', 'c', 'p', 60000, $1::bigint - i * $2::bigint, 1, '{1,1}' FROM generate_series(1, 20) i",
            now, day,
        )  # fmt: skip
        deleted = await prune_once(migrated_store, Retention(rates_days=7.5), batch=4)
        assert deleted == {"rate_window": 13, "rate_published": 13, "rate_alert": 0}
        left = await conn.fetchval(f'SELECT min(start_ms) FROM "{pg_schema}".rate_window')
        assert now - left == 7 * day
        # the default, 90 days, in milliseconds is past a 32-bit integer
        assert await prune_once(migrated_store, Retention(rates_days=90), batch=4) == {
            "rate_window": 0, "rate_published": 0, "rate_alert": 0}  # fmt: skip
    finally:
        await conn.close()
