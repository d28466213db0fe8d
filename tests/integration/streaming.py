"""Helpers for the streaming tests: settings for one test, the pipeline in-process or
as a subprocess, and readers of the output and dead-letter topics."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from replaywatch import codec
from replaywatch.config import Settings, load_settings
from replaywatch.pipeline import Pipeline
from replaywatch.stream.kafka_client import client_options
from tests.conftest import Endpoints

SPAWNED: list[subprocess.Popen[bytes]] = []
"""Every ``replaywatch run`` a test started: whatever a test's outcome, none outlives it
(the autouse fixture ``no_consumer_left_behind`` kills what is still running)."""


NOW = 1_790_000_000_000


def attempt_event(run: str, step: str, n: int, snapshot: Any, tools: Any = None, **extra: Any) -> dict[str, Any]:
    """A StepAttemptEvent record (JSON fields as text), attempt ``n`` at ``NOW + n``."""
    return {
        "event_id": str(uuid.uuid4()), "run_id": run, "step_id": step, "attempt": n, "status": "succeeded",
        "occurred_at": NOW + n, "output_snapshot": None if snapshot is None else orjson.dumps(snapshot).decode(),
        "tool_events": None if tools is None else orjson.dumps(tools).decode(), **extra,
    }  # fmt: skip


def _die_with_parent() -> None:
    """In the child: SIGKILL when the test process dies, however it dies (Linux). The
    signal follows the spawning *thread*: spawn from the test's own thread, never from
    a worker (``asyncio.to_thread``) that may exit first."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def spawn_run(env: dict[str, str], stderr: Any = subprocess.PIPE) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "replaywatch", "run"], env=env, stdout=subprocess.DEVNULL, stderr=stderr,
        preexec_fn=_die_with_parent,
    )  # fmt: skip
    SPAWNED.append(proc)
    return proc


def kill_spawned() -> list[int]:
    """SIGKILL each spawned consumer still running; their PIDs."""
    left = [p for p in SPAWNED if p.poll() is None]
    for p in left:
        p.kill()
        p.wait(10)
    SPAWNED.clear()
    return [p.pid for p in left]


@dataclass
class Lane:
    """One test's topics, group, schema and bucket, and the settings that name them."""

    endpoints: Endpoints
    schema: str
    bucket: str
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    partitions: int = 4
    extra: dict[str, Any] = field(default_factory=dict)
    registry: bool = False
    """Use the stack's schema registry (else none, whatever the environment says)."""

    @property
    def env(self) -> dict[str, str]:
        e = self.endpoints
        env = {
            "REPLAYWATCH_KAFKA_BOOTSTRAP": e.kafka_bootstrap,
            "REPLAYWATCH_POSTGRES_DSN": e.postgres_dsn,
            "REPLAYWATCH_POSTGRES_SCHEMA": self.schema,
            "REPLAYWATCH_S3_ENDPOINT": e.s3_endpoint,
            "REPLAYWATCH_S3_ACCESS_KEY_ID": e.s3_access_key_id,
            "REPLAYWATCH_S3_SECRET_ACCESS_KEY": e.s3_secret_access_key,
            "REPLAYWATCH_S3_REGION": e.s3_region,
            "REPLAYWATCH_S3_BUCKET": self.bucket,
            "REPLAYWATCH_INPUT_TOPIC": f"in-{self.tag}",
            "REPLAYWATCH_OUTPUT_TOPIC": f"out-{self.tag}",
            "REPLAYWATCH_DLQ_TOPIC": f"dlq-{self.tag}",
            "REPLAYWATCH_RATES_TOPIC": f"rates-{self.tag}",
            "REPLAYWATCH_ALERTS_TOPIC": f"alerts-{self.tag}",
            "REPLAYWATCH_GROUP_ID": f"g-{self.tag}",
            "REPLAYWATCH_PARTITIONS": str(self.partitions),
            "REPLAYWATCH_BATCH_TIMEOUT_MS": "20",
            "REPLAYWATCH_HTTP_PORT": "0",  # several consumers at once: none serves /metrics unless asked
            "REPLAYWATCH_SCHEMA_REGISTRY_URL": e.schema_registry_url if self.registry else "",
            "REPLAYWATCH_CREATE_TOPICS": "true",
            "REPLAYWATCH_CREATE_BUCKET": "true",
            "REPLAYWATCH_TOPIC_REPLICATION_FACTOR": "1",
            "REPLAYWATCH_TOPIC_MIN_INSYNC_REPLICAS": "1",
        }
        env.update({f"REPLAYWATCH_{k.upper()}": str(v) for k, v in self.extra.items()})
        return env

    def settings(self) -> Settings:
        saved = dict(os.environ)
        try:
            os.environ.update(self.env)
            return load_settings()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    async def create_topics(self) -> None:
        s = self.settings()
        admin = AIOKafkaAdminClient(**client_options(s))
        await admin.start()
        try:
            config = {"max.message.bytes": str(16 * 1024 * 1024)}
            await admin.create_topics(
                [
                    NewTopic(t, self.partitions, 1, topic_configs=config)
                    for t in (s.input_topic, s.output_topic, s.dlq_topic)
                ]
            )
        finally:
            await admin.close()

    async def send(self, events: Sequence[dict[str, Any] | bytes | None], key: bytes | None = None) -> None:
        s = self.settings()
        producer = AIOKafkaProducer(**client_options(s), enable_idempotence=True, linger_ms=5,
                                    max_request_size=16 * 1024 * 1024)  # fmt: skip
        await producer.start()
        try:
            for ev in events:
                if ev is None or isinstance(ev, bytes):
                    await producer.send(s.input_topic, ev, key=key or b"poison")
                else:
                    await producer.send(s.input_topic, codec.encode_attempt(ev), key=ev["run_id"].encode())
            await producer.flush()
        finally:
            await producer.stop()

    async def read(self, topic: str, *, want: int, timeout: float = 60.0, settle: float = 1.0) -> list[Any]:
        """Read ``topic`` (read_committed) from the start until ``want`` records, then a
        little longer (``settle`` s) to catch any extra ones."""
        s = self.settings()
        consumer = AIOKafkaConsumer(
            topic, **client_options(s), isolation_level="read_committed",
            auto_offset_reset="earliest", enable_auto_commit=False, group_id=None,
        )  # fmt: skip
        await consumer.start()
        out: list[Any] = []
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            settle_until: float | None = None
            while loop.time() < deadline:
                batch = await consumer.getmany(timeout_ms=200)
                for msgs in batch.values():
                    out.extend(msgs)
                if len(out) >= want:
                    settle_until = settle_until or loop.time() + settle
                    if loop.time() >= settle_until:
                        break
        finally:
            await consumer.stop()
        return out

    async def outputs(self, *, want: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        msgs = await self.read(self.settings().output_topic, want=want, timeout=timeout)
        return [
            codec.decode_comparison(m.value) | {"_headers": dict(m.headers), "_at": (m.partition, m.offset)}
            for m in msgs
        ]

    async def group_offsets(self) -> dict[int, int]:
        """The consumer group's offsets of the input topic, as Kafka holds them."""
        s = self.settings()
        admin = AIOKafkaAdminClient(**client_options(s))
        await admin.start()
        try:
            got = await admin.list_consumer_group_offsets(s.group_id)
        finally:
            await admin.close()
        return {tp.partition: meta.offset for tp, meta in got.items() if tp.topic == s.input_topic}

    async def end_offsets(self) -> dict[int, int]:
        """The input topic's end offsets, of the partitions that hold records."""
        s = self.settings()
        consumer = AIOKafkaConsumer(**client_options(s))
        await consumer.start()
        try:
            ends = await consumer.end_offsets([TopicPartition(s.input_topic, p) for p in range(self.partitions)])
        finally:
            await consumer.stop()
        return {tp.partition: end for tp, end in ends.items() if end}

    async def stored_total(self) -> int:
        """The sum of the offsets PostgreSQL holds for this lane: records committed
        (0 before `run` has migrated)."""
        conn = await asyncpg.connect(self.endpoints.postgres_dsn)
        try:
            total = await conn.fetchval(f'SELECT coalesce(sum(next_offset), 0) FROM "{self.schema}".consumer_offset')
        except asyncpg.UndefinedTableError:
            total = 0
        finally:
            await conn.close()
        return int(total)

    async def committed_past(self, total: int, timeout: float = 60) -> None:
        """Wait until the stored offsets add up to more than ``total``."""
        async with asyncio.timeout(timeout):
            while await self.stored_total() <= total:
                await asyncio.sleep(0.1)

    async def projections(self) -> dict[tuple[str, str], tuple[Any, ...]]:
        conn = await asyncpg.connect(self.endpoints.postgres_dsn)
        try:
            rows = await conn.fetch(
                f"SELECT run_id, step_id, base_attempt, current_attempt, max_attempt, last_verdict "
                f'FROM "{self.schema}".step_projection'
            )
        finally:
            await conn.close()
        return {(r["run_id"], r["step_id"]): (r["base_attempt"], r["current_attempt"], r["max_attempt"],
                                              r["last_verdict"]) for r in rows}  # fmt: skip

    @asynccontextmanager
    async def pipeline(self) -> AsyncIterator[Pipeline]:
        """The pipeline in this process, stopped (as by SIGTERM) on exit."""
        p = Pipeline(self.settings())
        stop = asyncio.Event()
        task = asyncio.create_task(p.run(stop))
        ready = asyncio.create_task(p.ready.wait())
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        try:
            yield p
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)

    def spawn(self, stderr: Any = subprocess.PIPE, **env: str) -> subprocess.Popen[bytes]:
        """``replaywatch run`` as a subprocess (killed at the end of the test if still running)."""
        return spawn_run({**os.environ, **self.env, "REPLAYWATCH_LOG_LEVEL": "INFO", **env}, stderr=stderr)


async def consuming(log: Path, timeout: float = 60) -> None:
    """Wait until the ``replaywatch run`` whose stderr is ``log`` consumes (it has joined its
    group, its stop handlers in place): what it is asked to do after that is its own work,
    not another process's already done."""
    async with asyncio.timeout(timeout):
        while "replaywatch consuming" not in log.read_text(errors="replace"):
            await asyncio.sleep(0.1)


def stop_proc(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 15) -> tuple[int, float]:
    """Signal the process; return (exit code, seconds it took)."""
    import time

    t0 = time.monotonic()
    proc.send_signal(sig)
    code = proc.wait(timeout)
    return code, time.monotonic() - t0


def oracle_projection(events: list[dict[str, Any]], config: Any) -> dict[tuple[str, str], tuple[Any, ...]]:
    """What one clean pass gives for each step: (base, current, max attempt, verdict)."""
    from replaywatch import demo

    state, _ = demo.replay(events, config)
    return {
        k: (p.baseline.number if p.baseline else None, p.current.number if p.current else None, p.max_attempt,
            p.last_verdict.value if p.last_verdict else None)
        for k, p in state.items()
    }  # fmt: skip
