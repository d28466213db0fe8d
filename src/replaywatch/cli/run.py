"""Commands that run the service and set it up: ``run``, ``migrate``, ``produce-demo``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from replaywatch import telemetry
from replaywatch.cli.app import (
    Bootstrap,
    GroupId,
    InputTopic,
    OutputTopic,
    PostgresDsn,
    PostgresSchema,
    app,
    fail,
    run_with_store,
)
from replaywatch.cli.app import settings_from as _settings
from replaywatch.cli.logs import configure_logging
from replaywatch.cli.process import run as run_loop
from replaywatch.cli.process import tune_gc, until_signalled
from replaywatch.config import Settings
from replaywatch.exceptions import ReplaywatchError, UsageError
from replaywatch.pipeline import Pipeline
from replaywatch.store.postgres import PostgresStore
from replaywatch.telemetry.http_endpoints import serving_endpoints


@app.command()
def run(
    kafka_bootstrap: Bootstrap = None,
    input_topic: InputTopic = None,
    output_topic: OutputTopic = None,
    dlq_topic: Annotated[str | None, typer.Option(help="[env REPLAYWATCH_DLQ_TOPIC]")] = None,
    group_id: GroupId = None,
    postgres_dsn: PostgresDsn = None,
    postgres_schema: PostgresSchema = None,
    s3_endpoint: Annotated[str | None, typer.Option(help="[env REPLAYWATCH_S3_ENDPOINT]")] = None,
    s3_bucket: Annotated[str | None, typer.Option(help="[env REPLAYWATCH_S3_BUCKET]")] = None,
    tokens_tolerance: Annotated[float | None, typer.Option(help="[env REPLAYWATCH_TOKENS_TOLERANCE]")] = None,
    cost_tolerance: Annotated[float | None, typer.Option(help="[env REPLAYWATCH_COST_TOLERANCE]")] = None,
    ignore: Annotated[
        list[str] | None, typer.Option("--ignore", help="Ignore path, repeatable [env REPLAYWATCH_IGNORE_PATHS]")
    ] = None,
    comparison_base: Annotated[
        str | None, typer.Option(help="first|previous [env REPLAYWATCH_COMPARISON_BASE]")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="[env REPLAYWATCH_BATCH_SIZE]")] = None,
    create_topics: Annotated[
        bool | None, typer.Option("--create-topics", help="Create missing topics [env REPLAYWATCH_CREATE_TOPICS]")
    ] = None,
    create_bucket: Annotated[
        bool | None, typer.Option("--create-bucket", help="Create a missing bucket [env REPLAYWATCH_CREATE_BUCKET]")
    ] = None,
) -> None:
    """Consume attempt events, compare, and publish drift events (until SIGTERM/SIGINT)."""
    settings = _settings(
        create_topics=create_topics, create_bucket=create_bucket,
        kafka_bootstrap=kafka_bootstrap, input_topic=input_topic, output_topic=output_topic, dlq_topic=dlq_topic,
        group_id=group_id, postgres_dsn=postgres_dsn, postgres_schema=postgres_schema, s3_endpoint=s3_endpoint,
        s3_bucket=s3_bucket, tokens_tolerance=tokens_tolerance, cost_tolerance=cost_tolerance,
        ignore_paths=tuple(ignore) if ignore else None, comparison_base=comparison_base, batch_size=batch_size,
    )  # fmt: skip
    configure_logging(settings.log_level, settings.log_format)
    telemetry.setup(max_links=settings.batch_size)
    tune_gc()

    async def serve(stop: asyncio.Event) -> None:
        pipeline = Pipeline(settings)
        async with serving_endpoints(settings.http_host, settings.http_port, pipeline.readiness):
            await pipeline.run(stop)

    try:
        run_loop(settings, until_signalled(settings, serve))
    except UsageError as exc:
        fail(str(exc))
    finally:
        telemetry.shutdown()


@app.command()
def migrate(
    postgres_dsn: PostgresDsn = None,
    postgres_schema: PostgresSchema = None,
    grant_read: Annotated[
        str | None,
        typer.Option("--grant-read", help="An existing role to grant read access to the schema (the web view's)"),
    ] = None,
) -> None:
    """Apply the database migrations (idempotent; `run` applies them too); with
    --grant-read, let a role read the schema and nothing more (`serve` runs as it)."""
    settings = _settings(postgres_dsn=postgres_dsn, postgres_schema=postgres_schema)

    async def work(store: PostgresStore) -> list[int]:
        applied = await store.migrate()
        if grant_read is not None:
            await store.grant_read(grant_read)
        return applied

    applied: list[int] = run_with_store(settings, work)
    typer.echo(f"migrations applied: {applied or 'none (up to date)'}", err=True)
    if grant_read is not None:
        typer.echo(f"role {grant_read} may read schema {settings.postgres_schema}, and write nothing", err=True)


@app.command("produce-demo")
def produce_demo(
    runs: int = 20,
    steps: int = 4,
    attempts: int = 3,
    drift: float = 0.07,
    tool_divergence: float = 0.02,
    attestation_divergence: float = 0.01,
    duplicates: float = 0.02,
    out_of_order: float = 0.05,
    no_snapshot: float = 0.0,
    snapshot_bytes: int = 1000,
    seed: int = 7,
    kafka_bootstrap: Bootstrap = None,
    input_topic: InputTopic = None,
    expect_file: Annotated[Path | None, typer.Option(help="Write the expected comparison ids here (JSON).")] = None,
) -> None:
    """Send a synthetic fleet's attempt events (with duplicates and out-of-order ones)."""
    from replaywatch import demo

    settings = _settings(kafka_bootstrap=kafka_bootstrap, input_topic=input_topic)
    spec = demo.FleetSpec(
        runs=runs, steps=steps, attempts=attempts, drift=drift, tool_divergence=tool_divergence,
        attestation_divergence=attestation_divergence, duplicates=duplicates, out_of_order=out_of_order,
        no_snapshot=no_snapshot, snapshot_bytes=snapshot_bytes, seed=seed,
    )  # fmt: skip
    events = demo.synthetic_fleet(spec)
    expected = demo.expected_comparisons(events, settings.compare_config())
    try:
        asyncio.run(produce(settings, events))
    except ReplaywatchError as exc:
        fail(str(exc), 1)
    if expect_file:
        expect_file.write_text(orjson.dumps(expected).decode())
    typer.echo(f"sent {len(events)} attempt events to {settings.input_topic}; expect {len(expected)} comparisons")


async def produce(settings: Settings, events: list[dict[str, Any]]) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient

    from replaywatch.codec import encode_attempt
    from replaywatch.stream.kafka_client import check_credentials, client_options
    from replaywatch.stream.kafka_errors import translate_kafka_errors
    from replaywatch.stream.topics import ensure_topics

    await check_credentials(settings)
    admin = AIOKafkaAdminClient(**client_options(settings))
    async with translate_kafka_errors("produce"):
        await admin.start()
        try:
            await ensure_topics(admin, settings)
        finally:
            await admin.close()
        producer = AIOKafkaProducer(
            **client_options(settings), enable_idempotence=True, linger_ms=10,
            max_batch_size=1 << 20,
        )  # fmt: skip
        schema_id = await _register_input(settings)
        await producer.start()
        try:
            for ev in events:
                value = encode_attempt(ev, schema_id=schema_id)
                await producer.send(settings.input_topic, value, key=ev["run_id"].encode())
            await producer.flush()
        finally:
            await producer.stop()


async def _register_input(settings: Settings) -> int | None:
    """With a schema registry: StepAttemptEvent registered under ``<input>-value``, its id
    (the demo's producer sends the Confluent wire format, as a registry's users do)."""
    if settings.schema_registry_url is None:
        return None
    from replaywatch.stream.schema_registry import SchemaRegistry

    user_info = settings.schema_registry_user_info
    schemas = SchemaRegistry.open(settings.schema_registry_url,
                                  user_info=user_info.get_secret_value() if user_info else None)  # fmt: skip
    try:
        from replaywatch.codec import ATTEMPT_SCHEMA

        return await schemas.register(settings.input_topic, ATTEMPT_SCHEMA)
    finally:
        await schemas.close()
