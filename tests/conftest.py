"""Session fixtures: the real stack, and per-test topics, schemas and buckets.

Where the stack comes from, in order:
1. the ``REPLAYWATCH_*`` endpoints, when set (``make test`` sets them from the devstack);
2. testcontainers, when ``REPLAYWATCH_STACK=containers`` and a Docker engine answers;
3. the devstack, started here and stopped at the end of the session.
There is no skip: without a stack, integration tests fail.
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import settings

from replaywatch.devstack import Stack, default_dir

# No per-example deadline: speed is measured by the benches, and on a busy 2-core CI
# machine a cold first example can take longer than hypothesis' 200 ms default.
settings.register_profile("replaywatch", deadline=None)
settings.load_profile("replaywatch")

with warnings.catch_warnings(record=True):  # authlib's own "always" filter, once, at import
    import confluent_kafka.schema_registry  # noqa: F401


@dataclass(frozen=True)
class Endpoints:
    kafka_bootstrap: str
    postgres_dsn: str
    s3_endpoint: str
    s3_access_key_id: str
    s3_secret_access_key: str
    s3_region: str
    schema_registry_url: str = ""
    """The devstack's registry (tests that use one opt in: ``Lane(registry=True)``)."""

    @classmethod
    def from_env(cls, env: dict[str, str]) -> Endpoints:
        return cls(
            env["REPLAYWATCH_KAFKA_BOOTSTRAP"],
            env["REPLAYWATCH_POSTGRES_DSN"],
            env["REPLAYWATCH_S3_ENDPOINT"],
            env.get("REPLAYWATCH_S3_ACCESS_KEY_ID", "test"),
            env.get("REPLAYWATCH_S3_SECRET_ACCESS_KEY", "test"),
            env.get("REPLAYWATCH_S3_REGION", "us-east-1"),
            env.get("REPLAYWATCH_SCHEMA_REGISTRY_URL", ""),
        )


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env().ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def endpoints() -> Iterator[Endpoints]:
    if os.environ.get("REPLAYWATCH_KAFKA_BOOTSTRAP"):
        yield Endpoints.from_env(dict(os.environ))
        return
    if os.environ.get("REPLAYWATCH_STACK") == "containers" and _docker_answers():
        yield from _containers()
        return
    stack = Stack(default_dir())
    started = stack.start()
    try:
        yield Endpoints.from_env(stack.env())
    finally:
        if started:
            stack.stop()


def _containers() -> Iterator[Endpoints]:  # pragma: no cover - needs a Docker engine
    from testcontainers.kafka import KafkaContainer
    from testcontainers.minio import MinioContainer
    from testcontainers.postgres import PostgresContainer

    with KafkaContainer().with_kraft() as kafka, PostgresContainer("postgres:16") as pg, MinioContainer() as minio:
        cfg = minio.get_config()
        yield Endpoints(
            kafka.get_bootstrap_server(),
            pg.get_connection_url().replace("postgresql+psycopg2", "postgresql"),
            f"http://{cfg['endpoint']}",
            cfg["access_key"],
            cfg["secret_key"],
            "us-east-1",
        )


@pytest.fixture(autouse=True)
def no_consumer_left_behind() -> Iterator[None]:
    """A test that fails never leaves a ``replaywatch run`` process behind."""
    yield
    from tests.integration.streaming import kill_spawned

    kill_spawned()


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
async def new_topic(endpoints: Endpoints, unique: str) -> AsyncIterator[object]:
    """Create topics with unique names: ``await new_topic("in", partitions=4)``."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=endpoints.kafka_bootstrap)
    await admin.start()
    created: list[str] = []

    async def make(stem: str = "t", partitions: int = 1) -> str:
        name = f"rw-{stem}-{unique}-{len(created)}"
        await admin.create_topics([NewTopic(name, partitions, 1)])
        created.append(name)
        return name

    try:
        yield make
    finally:
        if created:
            await admin.delete_topics(created)
        await admin.close()


@pytest.fixture
async def pg_schemas(endpoints: Endpoints, unique: str) -> AsyncIterator[Any]:
    """PostgreSQL schemas of this test's own, ``await pg_schemas()`` each; dropped
    afterwards (with a rebuild's scratch schema), over a new connection: the test may
    have restarted PostgreSQL."""
    import asyncpg

    made: list[str] = []

    async def make() -> str:
        name = f"rw_{unique}" if not made else f"rw_{unique}_{len(made)}"
        conn = await asyncpg.connect(endpoints.postgres_dsn)
        try:
            await conn.execute(f'CREATE SCHEMA "{name}"')
        finally:
            await conn.close()
        made.append(name)
        return name

    yield make
    conn = await asyncpg.connect(endpoints.postgres_dsn)
    try:
        for name in made:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
            await conn.execute(f'DROP SCHEMA IF EXISTS "{name}_rebuild" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
async def pg_schema(pg_schemas: Any) -> str:
    """A PostgreSQL schema of this test's own, dropped afterwards."""
    name: str = await pg_schemas()
    return name


@pytest.fixture
async def migrated_store(endpoints: Endpoints, pg_schema: str) -> AsyncIterator[Any]:
    """A ``PostgresStore`` of group ``g`` and topic ``t`` on this test's schema, migrated."""
    from replaywatch.store.postgres import PostgresStore

    store = await PostgresStore.connect(endpoints.postgres_dsn, schema=pg_schema, group_id="g", topic="t", pool_size=1)
    try:
        await store.migrate()
        yield store
    finally:
        await store.close()


def s3_client(endpoints: Endpoints) -> Any:
    """An aioboto3 S3 client for the stack (an async context manager)."""
    import aioboto3

    return aioboto3.Session().client(
        "s3",
        endpoint_url=endpoints.s3_endpoint,
        aws_access_key_id=endpoints.s3_access_key_id,
        aws_secret_access_key=endpoints.s3_secret_access_key,
        region_name=endpoints.s3_region,
    )


@pytest.fixture
async def bucket(endpoints: Endpoints, unique: str) -> AsyncIterator[str]:
    """An S3 bucket of this test's own."""
    name = f"rw-{unique}"
    async with s3_client(endpoints) as s3:
        await s3.create_bucket(Bucket=name)
    yield name
