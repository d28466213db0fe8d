"""The topics replaywatch uses: checked (created when asked), and their size limit."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError, for_code

from replaywatch.config import Settings
from replaywatch.exceptions import ConfigError, ServiceRefused, TransientError
from replaywatch.stream.kafka_errors import translate_kafka_errors

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
"""max.message.bytes of the topics replaywatch creates, and the largest record it reads."""


@contextlib.asynccontextmanager
async def kafka_admin(client: dict[str, Any]) -> AsyncIterator[AIOKafkaAdminClient]:
    """An admin client with the shared connection options (``kafka_client``)."""
    admin = AIOKafkaAdminClient(**client)
    async with translate_kafka_errors("connect admin"):
        await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


@contextlib.asynccontextmanager
async def end_offsets(
    client: dict[str, Any], admin: AIOKafkaAdminClient, topic: str
) -> AsyncIterator[Callable[[], Awaitable[dict[int, int]]]]:
    """Reads ``topic``'s end offsets, by partition (its partitions from ``admin``, their
    ends from a consumer of no group)."""
    consumer = AIOKafkaConsumer(**client, enable_auto_commit=False)
    async with translate_kafka_errors("connect a consumer"):
        await consumer.start()

    async def read() -> dict[int, int]:
        partitions = await partitions_of(admin, topic)
        if not partitions:
            raise TransientError(f"Kafka does not know the partitions of {topic} yet")
        async with translate_kafka_errors("read end offsets"):
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            return {tp.partition: end for tp, end in (await consumer.end_offsets(tps)).items()}

    try:
        yield read
    finally:
        await consumer.stop()


async def ensure_topics(admin: AIOKafkaAdminClient, settings: Settings) -> None:
    """Check that the input, output and dead-letter topics (and, with rates on, the
    rates and alerts topics) exist; create the missing
    ones only when asked (``--create-topics``), else stop with one message that names
    them. Created topics take the settings' partitions, replication factor and
    ``min.insync.replicas``."""
    async with translate_kafka_errors("list topics"):
        existing = set(await admin.list_topics())
    topics = [settings.input_topic, settings.output_topic, settings.dlq_topic]
    if settings.rates:
        topics += [settings.rates_topic, settings.alerts_topic]
    wanted = [t for t in topics if t not in existing]
    if not wanted:
        return
    if not settings.create_topics:
        raise ServiceRefused(
            f"topic(s) {', '.join(wanted)} do not exist on {settings.kafka_bootstrap}; create them "
            f"(max.message.bytes >= {MAX_MESSAGE_BYTES} for the output and dead-letter topics) or run with "
            "--create-topics (REPLAYWATCH_CREATE_TOPICS=true)"
        )
    config = {
        "max.message.bytes": str(MAX_MESSAGE_BYTES),
        "min.insync.replicas": str(settings.topic_min_insync_replicas),
    }
    rf = settings.topic_replication_factor
    async with translate_kafka_errors("create topics"):
        resp = await admin.create_topics([NewTopic(t, settings.partitions, rf, topic_configs=config) for t in wanted])
    for topic, code, *_ in resp.topic_errors:
        if code not in (0, TopicAlreadyExistsError.errno):  # already there: another instance was first
            raise ConfigError(f"cannot create topic {topic!r}: {for_code(code).__name__}; create it yourself")
    logger.info("created topics %s: %d partitions, replication factor %d", wanted, settings.partitions, rf)


async def max_message_bytes(admin: AIOKafkaAdminClient, topic: str) -> int:
    """The topic's ``max.message.bytes``: the largest record batch it accepts."""
    async with translate_kafka_errors(f"describe topic {topic}"):
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": None})]
        )
    for response in responses:
        for error_code, error_message, _type, _name, entries in response.resources:
            if error_code == UnknownTopicOrPartitionError.errno:
                # a topic just created is not known to every part of the broker at once
                raise TransientError(f"topic {topic!r} is not visible yet (UNKNOWN_TOPIC_OR_PARTITION)")
            if error_code:
                raise ConfigError(f"cannot read the configuration of topic {topic!r}: {error_code} {error_message}")
            for entry in entries:
                if entry[0] == "max.message.bytes":
                    return int(entry[1])
    return 1024 * 1024 + 12  # the broker default


async def partitions_of(admin: AIOKafkaAdminClient, topic: str) -> set[int]:
    """The topic's partitions (empty when it does not exist)."""
    async with translate_kafka_errors(f"describe topic {topic}"):
        described = await admin.describe_topics([topic])
    return {p["partition"] for t in described if t.get("error_code", 0) == 0 for p in t.get("partitions", [])}
