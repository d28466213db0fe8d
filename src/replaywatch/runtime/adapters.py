"""The adapters, opened from the settings on an exit stack: PostgreSQL (migrated), S3,
Kafka's admin (topics ensured, the output topic's size limit read), the dead-letter
producer, the outbox publisher, the input consumer and the schema registry (the output
schema registered). Each adapter takes explicit arguments, read from the settings here;
``run``, the replays and ``serve`` open them through this module."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

from aiokafka import AIOKafkaProducer

from replaywatch.config import Settings
from replaywatch.ports import Consumer, DeadLetterSink, DiffStore, Publisher, Store
from replaywatch.rates.cloudevents import source_of
from replaywatch.rates.records import RATE_SCHEMA
from replaywatch.runtime.closer import Closer
from replaywatch.runtime.retry import Backoff
from replaywatch.store.artifacts import S3Artifacts, S3Target
from replaywatch.store.postgres import PostgresStore
from replaywatch.store.rates import RatesStore
from replaywatch.stream.consumer import InputConsumer
from replaywatch.stream.deadletter import DeadLetters
from replaywatch.stream.kafka_client import check_credentials, client_options
from replaywatch.stream.publisher import OutboxPublisher, kafka_producers, kafka_progress
from replaywatch.stream.schema_registry import SchemaRegistry
from replaywatch.stream.topics import MAX_MESSAGE_BYTES, end_offsets, ensure_topics, kafka_admin, max_message_bytes


@dataclass
class Adapters:
    store: Store
    artifacts: DiffStore
    dead_letters: DeadLetterSink
    publisher: Publisher
    consumer: Consumer | None
    """``InputConsumer`` (the live group member), a replay's ``RangeConsumer``, or None
    (a job that only publishes what it committed)."""
    output_limit: int
    """The output topic's max.message.bytes."""
    schemas: SchemaRegistry | None = None
    """The schema registry, when one is configured."""
    output_schema_id: int | None = None
    """ReplayComparisonEvent's id in the registry: events are published framed with it."""
    postgres: PostgresStore | None = None
    """The PostgreSQL adapter itself, for the jobs that read more of it than ``Store``."""
    closer: Closer | None = None
    """The rates' closer (the live consumer's, with rates on)."""


def open_diff_store(
    settings: Settings, *, create_bucket: bool = False, check_bucket: bool = True
) -> AbstractAsyncContextManager[DiffStore]:
    """The S3 diff store of ``REPLAYWATCH_S3_CLIENT``: obstore by default, or aioboto3."""
    key, secret = settings.s3_access_key_id, settings.s3_secret_access_key
    target = S3Target(
        bucket=settings.s3_bucket, endpoint=settings.s3_endpoint, region=settings.s3_region,
        access_key_id=key.get_secret_value() if key else None,
        secret_access_key=secret.get_secret_value() if secret else None,
        addressing_style=settings.s3_addressing_style, concurrency=settings.s3_concurrency,
    )  # fmt: skip
    if settings.s3_library == "obstore":
        from replaywatch.store.obstore_artifacts import ObstoreArtifacts

        return ObstoreArtifacts.open(target, create_bucket=create_bucket, check_bucket=check_bucket)
    ca = str(settings.s3_ca_bundle) if settings.s3_ca_bundle else None
    return S3Artifacts.open(target, create_bucket=create_bucket, check_bucket=check_bucket, ca_bundle=ca)


T = TypeVar("T")


async def enter(
    stack: AsyncExitStack, retry: Backoff, open_one: Callable[[], AbstractAsyncContextManager[T]], what: str
) -> T:
    """Enter a client's context on ``stack``, a new one on each try while its service is
    unreachable (``retry``): a service down at start is waited for, not a crash."""
    return await retry.call(lambda: stack.enter_async_context(open_one()), what)


async def open_adapters(
    settings: Settings,
    stack: AsyncExitStack,
    retry: Backoff,
    *,
    consumer: Callable[[Settings], Consumer] | None = InputConsumer.create,
    diffs: DiffStore | None = None,
    dead_letters: DeadLetterSink | None = None,
    closer: bool = False,
) -> Adapters:
    """Open every adapter; each is closed when ``stack`` closes. The consumer is created,
    not started: it joins the group once the pipeline is ready for its callbacks. A
    replay passes its own reader, and may keep diffs and dead letters to itself; the live
    consumer asks for the rates' ``closer``."""
    store = await retry.call(
        lambda: PostgresStore.connect(
            settings.postgres_url(),
            schema=settings.postgres_schema,
            group_id=settings.group_id,
            topic=settings.input_topic,
            pool_size=5 if closer else 4,  # the closer keeps one connection
        ),
        "connect to PostgreSQL",
    )
    stack.push_async_callback(store.close)
    await retry.call(store.migrate, "migrate PostgreSQL")
    artifacts = diffs
    if artifacts is None:
        artifacts = await enter(stack, retry, lambda: open_diff_store(settings, create_bucket=settings.create_bucket),
                                "open the S3 diff store")  # fmt: skip
    dead_letters, publisher, output_limit = await _open_kafka(settings, stack, retry, store, dead_letters)
    schemas, schema_id = await open_schema_registry(settings, stack, retry)
    rates = None
    if closer and settings.rates:
        rate_schema = None if schemas is None else await retry.call(
            lambda: schemas.register(settings.rates_topic, RATE_SCHEMA), "register the rates schema")  # fmt: skip
        rates = await _open_closer(settings, stack, retry, store, rate_schema)
    return Adapters(
        store,
        artifacts,
        dead_letters,
        publisher,
        consumer(settings) if consumer else None,
        output_limit,
        schemas,
        schema_id,
        closer=rates,
    )


async def _open_closer(
    settings: Settings, stack: AsyncExitStack, retry: Backoff, store: PostgresStore, schema_id: int | None
) -> Closer:
    admin = await enter(stack, retry, lambda: kafka_admin(client_options(settings)), "connect to Kafka")
    progress_group = f"{settings.group_id}.rates"
    read = kafka_progress(admin, settings.rates_topic, progress_group)
    offsets = await enter(stack, retry, lambda: end_offsets(client_options(settings), admin, settings.input_topic),
                          "connect to Kafka")  # fmt: skip
    closer = Closer(
        store=RatesStore(store.pool, settings.postgres_schema, settings.group_id, settings.input_topic),
        settings=settings.rates_settings(),
        producer=lambda: AIOKafkaProducer(**client_options(settings), acks="all",
                                          transactional_id=f"{settings.group_id}.rates.{settings.input_topic}"),
        progress=lambda: read(0), ends=offsets, rates_topic=settings.rates_topic, alerts_topic=settings.alerts_topic,
        progress_group=progress_group, source=source_of(settings.group_id, settings.input_topic),
        public_url=settings.public_url, schema_id=schema_id, metric_cohorts=settings.rates_metric_cohorts,
    )  # fmt: skip
    stack.push_async_callback(closer.stop)
    return closer


async def _open_kafka(
    settings: Settings, stack: AsyncExitStack, retry: Backoff, store: PostgresStore, dead_letters: DeadLetterSink | None
) -> tuple[DeadLetterSink, Publisher, int]:
    """Kafka's side: credentials checked, topics ensured, the dead-letter producer (unless
    given) and the outbox publisher; with the output topic's max.message.bytes."""
    await retry.call(lambda: check_credentials(settings), "log in to Kafka")
    admin = await enter(stack, retry, lambda: kafka_admin(client_options(settings)), "connect to Kafka")
    await retry.call(lambda: ensure_topics(admin, settings), "check the topics")
    output_limit = await retry.call(
        lambda: max_message_bytes(admin, settings.output_topic), "read the output topic's limit"
    )
    sink = dead_letters
    if sink is None:
        dlq_limit = await retry.call(
            lambda: max_message_bytes(admin, settings.dlq_topic), "read the dead-letter topic's limit"
        )
        sink = await enter(
            stack, retry,
            lambda: DeadLetters.open(client_options(settings), settings.dlq_topic, MAX_MESSAGE_BYTES,
                                     min(dlq_limit, MAX_MESSAGE_BYTES)),
            "start the dead-letter producer",
        )  # fmt: skip
    publisher = OutboxPublisher(
        store=store,
        producers=kafka_producers(client_options(settings), settings.group_id, settings.input_topic, output_limit),
        progress=kafka_progress(admin, settings.input_topic, settings.publisher_group),
        input_topic=settings.input_topic,
        output_topic=settings.output_topic,
        dlq_topic=settings.dlq_topic,
        progress_group=settings.publisher_group,
        max_message_bytes=output_limit,
        queue_bytes=settings.publisher_queue_mb * 1024 * 1024,
        retry=retry,
    )
    stack.push_async_callback(publisher.close)
    return sink, publisher, output_limit


async def open_schema_registry(
    settings: Settings, stack: AsyncExitStack, retry: Backoff, *, register: bool = True
) -> tuple[SchemaRegistry | None, int | None]:
    """The schema registry and the output schema's id in it (registered unless not
    ``register``: a dry run publishes nothing), when one is configured."""
    if settings.schema_registry_url is None:
        return None, None
    user_info = settings.schema_registry_user_info
    schemas = SchemaRegistry.open(
        settings.schema_registry_url,
        user_info=user_info.get_secret_value() if user_info else None,
        ca_location=str(settings.schema_registry_ca) if settings.schema_registry_ca else None,
    )
    stack.push_async_callback(schemas.close)
    if not register:
        return schemas, None
    schema_id = await retry.call(lambda: schemas.register_output(settings.output_topic), "register the output schema")
    return schemas, schema_id


async def connect_store(settings: Settings, *, pool_size: int = 4, read_only: bool = False) -> PostgresStore:
    """PostgreSQL alone, for the commands that read or migrate it (no retry: a command
    says what is wrong and exits)."""
    return await PostgresStore.connect(settings.postgres_url(), schema=settings.postgres_schema,
                                       group_id=settings.group_id, topic=settings.input_topic, pool_size=pool_size,
                                       read_only=read_only)  # fmt: skip


@asynccontextmanager
async def open_readers(settings: Settings, *, pool_size: int = 4) -> AsyncIterator[tuple[PostgresStore, DiffStore]]:
    """PostgreSQL with read-only transactions and the S3 diff store (the bucket neither
    checked nor created): what ``serve`` and ``diff`` read."""
    async with AsyncExitStack() as stack:
        store = await connect_store(settings, pool_size=pool_size, read_only=True)
        stack.push_async_callback(store.close)
        diffs = await stack.enter_async_context(open_diff_store(settings, check_bucket=False))
        yield store, diffs


async def with_store(settings: Settings, use: Callable[[PostgresStore], Awaitable[T]]) -> T:
    """Connect to PostgreSQL, ``await use(store)``, close."""
    store = await connect_store(settings)
    try:
        return await use(store)
    finally:
        await store.close()
