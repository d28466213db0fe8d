"""What replays share: a job's spec and its hash (a rerun of the same command finds its
unfinished job and resumes it), the ranges resolved against the topic, the settings a
job runs under (its own group, so its checkpoint and its publisher are its own), and
the stores it opens.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson

from replaywatch.config import Settings
from replaywatch.exceptions import BadRecordError, UsageError
from replaywatch.replay.ranges import Position, Ranges, parse_partitions, parse_position, resolve
from replaywatch.store.jobs import Job, JobStore
from replaywatch.store.postgres import PostgresStore
from replaywatch.stream.kafka_client import client_options
from replaywatch.stream.kafka_errors import translate_kafka_errors
from replaywatch.stream.range_consumer import reader
from replaywatch.stream.topics import kafka_admin, partitions_of


@dataclass(frozen=True)
class ReplaySpec:
    """A replay as the operator asked for it."""

    start: str = "beginning"
    end: str = "now"
    partitions: str | None = None
    output_topic: str | None = None

    def parsed(self) -> tuple[Position, Position, set[int] | None]:
        return (
            parse_position(self.start, end=False),
            parse_position(self.end, end=True),
            parse_partitions(self.partitions),
        )

    def describe(self, kind: str, settings: Settings, **more: Any) -> dict[str, Any]:
        """What identifies the job: the same command over the same topic and settings."""
        return {
            "kind": kind,
            "input_topic": settings.input_topic,
            "group": settings.group_id,
            "from": self.start,
            "to": self.end,
            "partitions": sorted(parse_partitions(self.partitions) or []),
            "output_topic": self.output_topic or settings.output_topic,
            "settings": settings.compare_config().fingerprint(),
            **more,
        }


def spec_hash(spec: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(spec, option=orjson.OPT_SORT_KEYS)).hexdigest()


def job_settings(settings: Settings, job: Job, output_topic: str | None) -> Settings:
    """The job's own group (its checkpoint, outbox and transactional ids), its output topic."""
    return settings.model_copy(
        update={"group_id": f"{settings.group_id}.{job.job_id}", "output_topic": output_topic or settings.output_topic}
    )


async def resolve_ranges(settings: Settings, spec: ReplaySpec) -> Ranges:
    """The spec's ranges, resolved against the topic as it is now."""
    start, end, partitions = spec.parsed()
    async with kafka_admin(client_options(settings)) as admin:
        available = await partitions_of(admin, settings.input_topic)
    if not available:
        raise UsageError(f"topic {settings.input_topic!r} does not exist or has no partitions; check --input-topic")
    consumer = reader(settings)
    async with translate_kafka_errors("resolve the replay's offsets"):
        await consumer.start()
    try:
        async with translate_kafka_errors("resolve the replay's offsets"):
            return await resolve(consumer, settings.input_topic, available, partitions, start, end)
    finally:
        await consumer.stop()


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[tuple[PostgresStore, JobStore]]:
    """The live schema's store (migrated) and its jobs."""
    store = await PostgresStore.connect(
        settings.postgres_url(),
        schema=settings.postgres_schema,
        group_id=settings.group_id,
        topic=settings.input_topic,
    )
    try:
        await store.migrate()
        yield store, JobStore(store.pool, settings.postgres_schema)
    finally:
        await store.close()


class CountedDeadLetters:
    """The dead-letter sink of a replay: counts bad records by reason, sends nothing."""

    def __init__(self) -> None:
        self.reasons: Counter[str] = Counter()

    async def send(self, items: Sequence[tuple[Any, BadRecordError]], acknowledged: set[tuple[int, int]]) -> None:
        for record, error in items:
            source = (record.partition, record.offset)
            if source not in acknowledged:
                acknowledged.add(source)
                self.reasons[error.reason] += 1
