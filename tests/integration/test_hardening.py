"""No accepted input and no failure stops the consumer, stalls a partition or loses an
event: the ambiguous commit, refusals by PostgreSQL, dead letters once, static
membership, and a permanent Kafka refusal that stops `run` with one clear message."""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import asyncpg
import orjson
import pytest
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from replaywatch import codec, demo
from tests.conftest import Endpoints
from tests.integration.pg_proxy import CommitReplyDropper
from tests.integration.streaming import Lane, oracle_projection, stop_proc

pytestmark = pytest.mark.integration

NOW = 1_790_000_000_000


@pytest.fixture
def lane(endpoints: Endpoints, pg_schema: str, bucket: str) -> Lane:
    return Lane(endpoints, pg_schema, bucket)


def attempt(run: str, step: str, n: int, snapshot: Any) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()), "run_id": run, "step_id": step, "attempt": n, "status": "succeeded",
        "occurred_at": NOW + n, "output_snapshot": orjson.dumps(snapshot).decode(),
    }  # fmt: skip


def fleet(runs: int, seed: int) -> list[dict[str, Any]]:
    return demo.synthetic_fleet(demo.FleetSpec(runs=runs, steps=3, attempts=3, seed=seed, snapshot_bytes=300))


async def wait_for_offsets(lane: Lane, total: int, timeout: float = 60) -> None:
    """Until PostgreSQL's stored offsets of the lane add up to ``total`` records."""
    await lane.committed_past(total - 1, timeout)


def with_port(dsn: str, port: int) -> str:
    url = urlparse(dsn)
    return urlunparse(url._replace(netloc=f"{url.username}@127.0.0.1:{port}" if url.username else f"127.0.0.1:{port}"))


async def test_a_commit_whose_reply_is_lost_loses_no_event(lane: Lane) -> None:
    """Through a proxy that drops the connection right after every third COMMIT: the
    write recognises its own commit, and the publisher never passes over its rows."""
    proxy = CommitReplyDropper(urlparse(lane.endpoints.postgres_dsn).port or 5432, every=3)
    lane.extra = {"postgres_dsn": with_port(lane.endpoints.postgres_dsn, proxy.port), "batch_size": 40}
    events = fleet(120, seed=31)
    expected = demo.expected_comparisons(events, lane.settings().compare_config())
    await lane.create_topics()
    try:
        async with lane.pipeline():
            for i in range(0, len(events), 60):  # several commits
                await lane.send(events[i : i + 60])
                await wait_for_offsets(lane, i + len(events[i : i + 60]))
            out = await lane.outputs(want=len(expected), timeout=90)
    finally:
        proxy.close()
    assert proxy.dropped >= 2, f"the proxy dropped {proxy.dropped} commit replies of {proxy.commits}"
    ids = Counter(o["event_id"] for o in out)
    assert set(ids) == set(expected)
    twice = [(o["event_id"], o["source_partition"], o["source_offset"], o["_at"])
             for o in out if ids[o["event_id"]] > 1]  # fmt: skip
    assert not twice, f"published more than once (event, input partition and offset, output's): {twice}"
    assert await lane.projections() == oracle_projection(events, lane.settings().compare_config())


async def test_rows_postgres_refuses_dead_letter_their_records_and_the_rest_commit(lane: Lane) -> None:
    """A constraint PostgreSQL enforces refuses some steps' rows: those records are
    dead-lettered (reason rejected) and every other record of the same batches commits."""
    run = f"run-{lane.tag}"
    conn = await asyncpg.connect(lane.endpoints.postgres_dsn)
    try:
        async with lane.pipeline():  # the pipeline migrates; then the operator adds a rule
            await conn.execute(
                f'ALTER TABLE "{lane.schema}".step_projection '
                "ADD CONSTRAINT no_refused CHECK (step_id NOT LIKE $$refused-%$$)"
            )
            events = []
            for n in (1, 2):
                events += [attempt(run, f"ok-{i}", n, {"v": n, "tokens": 5}) for i in range(20)]
                events += [attempt(run, "refused-a", n, {"v": n}), attempt(run, "refused-b", n, {"v": 1})]
            await lane.send(events)
            dead = await lane.read(lane.settings().dlq_topic, want=4, timeout=60)
            await wait_for_offsets(lane, len(events))
            out = await lane.outputs(want=20)
    finally:
        await conn.close()
    assert len(dead) == 4
    headers = [dict(m.headers) for m in dead]
    assert {h["replaywatch.reason"] for h in headers} == {b"rejected"}
    assert all(b"refused" in h["replaywatch.message"] and b"23514" in h["replaywatch.message"] for h in headers)
    assert sorted(codec.decode_attempt(m.value).step_id for m in dead) == ["refused-a"] * 2 + ["refused-b"] * 2
    assert {o["step_id"] for o in out} == {f"ok-{i}" for i in range(20)}
    assert set(await lane.projections()) == {(run, f"ok-{i}") for i in range(20)}


async def test_dead_letters_are_sent_once_however_often_a_write_is_retried(lane: Lane) -> None:
    """The first three commits fail with a serialization failure (transient): the write
    is retried, and each bad record reaches the dead-letter topic once."""
    conn = await asyncpg.connect(lane.endpoints.postgres_dsn)
    q = f'"{lane.schema}"'
    try:
        async with lane.pipeline():
            await conn.execute(f"""
                CREATE SEQUENCE {q}.failures;
                CREATE FUNCTION {q}.fail_first_commits() RETURNS trigger LANGUAGE plpgsql AS $f$
                BEGIN
                    IF nextval('{lane.schema}.failures') <= 3 THEN
                        RAISE EXCEPTION 'injected' USING ERRCODE = '40001';
                    END IF;
                    RETURN NEW;
                END $f$;
                CREATE TRIGGER fail_first_commits BEFORE INSERT OR UPDATE ON {q}.consumer_offset
                    FOR EACH ROW EXECUTE FUNCTION {q}.fail_first_commits();
            """)  # fmt: skip
            good = fleet(10, seed=5)
            await lane.send([*good[:5], b"not avro", b"\x00\x00\x00\x00\x07bad", *good[5:]])
            await wait_for_offsets(lane, len(good) + 2)
            failures = await conn.fetchval(f"SELECT last_value FROM {q}.failures")
            dead = await lane.read(lane.settings().dlq_topic, want=2, timeout=30, settle=2.0)
    finally:
        await conn.close()
    assert failures >= 4, "the commits were not retried"
    assert sorted(m.value for m in dead) == sorted([b"not avro", b"\x00\x00\x00\x00\x07bad"])


def assignments(log: Path) -> list[list[int]]:
    text = log.read_text(errors="replace")
    return [[int(p) for p in re.findall(r"\d+", m)] for m in re.findall(r"partitions assigned: \[([\d, ]*)\]", text)]


async def wait_for_assignments(log: Path, count: int, timeout: float = 60) -> list[list[int]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(got := assignments(log)) >= count:
            return got
        await asyncio.sleep(0.1)
    raise AssertionError(f"{log} did not log {count} assignments: {log.read_text(errors='replace')[-2000:]}")


async def test_static_membership_a_restarted_member_takes_its_partitions_back(lane: Lane, tmp_path: Path) -> None:
    """Two static members share four partitions; one is SIGKILLed and restarted with the
    same id: it gets its partitions back at once and the other's are never moved."""
    await lane.create_topics()
    events = fleet(40, seed=8)
    logs = {name: tmp_path / f"{name}.log" for name in ("a", "b", "a2")}

    def spawn(name: str, member: str) -> subprocess.Popen[bytes]:
        with logs[name].open("wb") as log:
            return lane.spawn(REPLAYWATCH_INSTANCE_ID=member, stderr=log)

    a = spawn("a", "member-a")
    await wait_for_assignments(logs["a"], 1)
    b = spawn("b", "member-b")
    b_got = await wait_for_assignments(logs["b"], 1)
    a_got = await wait_for_assignments(logs["a"], 2)  # a gave half of its partitions to b
    assert sorted(a_got[-1] + b_got[-1]) == [0, 1, 2, 3]
    await lane.send(events[: len(events) // 2])
    await wait_for_offsets(lane, len(events) // 2)
    a.kill()
    a.wait(10)
    restarted = time.monotonic()
    a2 = spawn("a2", "member-a")
    a2_got = await wait_for_assignments(logs["a2"], 1)
    back_in = time.monotonic() - restarted
    await lane.send(events[len(events) // 2 :])
    await wait_for_offsets(lane, len(events))
    assert sorted(a2_got[0]) == sorted(a_got[-1]), "the restarted member did not get its own partitions back"
    assert assignments(logs["b"]) == b_got, "the other member's partitions moved"
    assert "partitions revoked" not in logs["b"].read_text()
    for proc in (a2, b):
        code, _ = await asyncio.to_thread(stop_proc, proc)
        assert code == 0
    assert back_in < 15, f"the restarted member waited {back_in:.1f}s for its partitions"


def deny(lane: Lane, kind: ResourceType, name: str, operation: AclOperation) -> Callable[[], None]:
    """Deny ``operation`` on a resource to replaywatch's principal; returns the undo."""
    admin = AdminClient({"bootstrap.servers": lane.endpoints.kafka_bootstrap})
    fields = (kind, name, ResourcePatternType.LITERAL, "User:ANONYMOUS", "*", operation, AclPermissionType.DENY)
    for f in admin.create_acls([AclBinding(*fields)]).values():
        f.result()

    def undo() -> None:
        for f in admin.delete_acls([AclBindingFilter(*fields)]).values():
            f.result()

    return undo


def assert_stopped_with_one_line(code: int, err: str, error: str) -> None:
    """Exit 2, and a last line that names Kafka's refusal and what to fix; no traceback."""
    last = err.strip().splitlines()[-1] if err.strip() else ""
    assert code == 2, err
    assert last.startswith("replaywatch: error: Kafka refused") and error in last and "ACL" in last, err
    assert "Traceback" not in err, err[err.index("Traceback") - 300 :]


async def test_a_permanent_kafka_refusal_at_start_stops_run_with_one_clear_message(lane: Lane) -> None:
    """The group is denied to replaywatch's principal: `run` does not retry forever, it
    exits non-zero with one line that says what to fix."""
    await lane.create_topics()
    undo = deny(lane, ResourceType.GROUP, lane.settings().group_id, AclOperation.ALL)
    try:
        proc = lane.spawn()
        code = await asyncio.to_thread(proc.wait, 60)
        err = proc.stderr.read().decode() if proc.stderr else ""
    finally:
        undo()
    assert_stopped_with_one_line(code, err, "GroupAuthorizationFailed")


async def test_a_permanent_kafka_refusal_while_running_stops_run_rather_than_stall(lane: Lane) -> None:
    """Writing to the output topic is denied while `run` is publishing: the partition's
    publisher does not retry forever (the old stall), the process exits with one line."""
    await lane.create_topics()
    proc = lane.spawn()
    events = fleet(20, seed=9)
    await lane.send(events[:30])
    await wait_for_offsets(lane, 30)
    undo = deny(lane, ResourceType.TOPIC, lane.settings().output_topic, AclOperation.WRITE)
    try:
        await lane.send(events[30:])
        code = await asyncio.to_thread(proc.wait, 90)
        err = proc.stderr.read().decode() if proc.stderr else ""
    finally:
        undo()
    assert_stopped_with_one_line(code, err, "TopicAuthorizationFailed")
