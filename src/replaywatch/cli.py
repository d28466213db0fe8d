"""The ``replaywatch`` command line.

Typer (on Click) gives typed options, ``--help`` for free and exit status 2 for
usage errors, which is what scripts expect.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import orjson
import typer

from replaywatch import telemetry
from replaywatch.codec import latency_of
from replaywatch.compare import ABSENT, Attempt, CompareConfig, parse_json, prepare
from replaywatch.compare import compare as compare_prepared
from replaywatch.config import Settings, load_settings
from replaywatch.devstack.cli import devstack_app
from replaywatch.exceptions import ReplaywatchError, UsageError
from replaywatch.pipeline import Pipeline
from replaywatch.runtime.retry import GaveUp
from replaywatch.store.postgres import PostgresStore
from replaywatch.telemetry.http_endpoints import serving

app = typer.Typer(
    help="Watch fleets of AI agents for replay drift.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


T = TypeVar("T")


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one clear line to stderr and exit (2: bad input or usage)."""
    typer.echo(f"replaywatch: error: {message}", err=True)
    raise typer.Exit(code)


def _load_attempt(path: Path, default_attempt: int) -> Attempt:
    try:
        text = path.read_bytes()
    except OSError as exc:
        fail(f"{path}: cannot read the file ({exc.strerror}); give the path of a JSON file")
    try:
        doc = parse_json(text)
    except ReplaywatchError as exc:
        fail(f"{path}: not valid JSON: {exc}")
    if type(doc) is not dict:
        fail(f"{path}: must hold one JSON object with an output_snapshot, got {type(doc).__name__}")
    snapshot = doc.get("output_snapshot")
    if type(snapshot) is not dict:
        fail(
            f"{path}: missing output snapshots; cannot run mocked replay (the object needs an 'output_snapshot' object)"
        )
    attempt = doc.get("attempt", default_attempt)
    if type(attempt) is not int:
        fail(f"{path}: 'attempt' must be an integer, got {attempt!r}")
    provider, version = doc.get("provider"), doc.get("provider_version")
    latency = doc.get("latency_ms")
    return Attempt(
        run_id=str(doc.get("run_id", "")),
        step_id=str(doc.get("step_id", "")),
        number=attempt,
        output_snapshot=snapshot,
        tool_events=doc.get("tool_events", ABSENT),
        provider=provider if type(provider) is str else None,
        provider_version=version if type(version) is str else None,
        latency_ms=latency_of(latency),
    )


@app.command()
def compare(
    baseline: Annotated[Path, typer.Argument(help="JSON file of the baseline attempt.")],
    current: Annotated[Path, typer.Argument(help="JSON file of the current attempt.")],
    tokens_tolerance: Annotated[float, typer.Option(help="Allowed relative token change (0.01 = 1%).")] = 0.0,
    cost_tolerance: Annotated[float, typer.Option(help="Allowed relative cost change.")] = 0.0,
    latency_tolerance: Annotated[
        float | None, typer.Option(help="Allowed relative latency change (latency_ms); off when not given.")
    ] = None,
    ignore: Annotated[
        list[str] | None,
        typer.Option("--ignore", help="Path to leave out of structure/tool comparisons (repeatable)."),
    ] = None,
    usage: Annotated[str, typer.Option(help="Usage preset: reference, openai, gen_ai, anthropic or all.")] = (
        "reference"
    ),
    policy_file: Annotated[
        Path | None,
        typer.Option("--policy", help="Policy file (TOML/YAML): the rule matching the current attempt applies."),
    ] = None,
    provider: Annotated[str | None, typer.Option(help="The current attempt's provider (else its file's).")] = None,
    provider_version: Annotated[
        str | None, typer.Option(help="The current attempt's provider version (else its file's).")
    ] = None,
    show_diff: Annotated[
        bool, typer.Option(help="Also print the diff object, and tool-event changes in words (stderr).")
    ] = False,
    explain: Annotated[bool, typer.Option(help="Say in words why the verdict is what it is (stderr).")] = False,
    comparators: Annotated[
        list[str] | None,
        typer.Option(
            "--compare",
            help="A comparator for a path, as a policy's [default.compare] writes it: PATH=KIND or "
            "PATH=KIND:threshold=0.8,abs=0.05,rel=0.1 (kinds: exact, text, semantic, number, set, ignore; repeatable).",
        ),
    ] = None,
) -> None:
    """Compare two attempts of a step. The summary is JSON on stdout; --explain and
    --show-diff add lines for people on stderr. Exit 0 within tolerance, 1 drift or
    divergence, 2 bad input."""
    from replaywatch.compare import policy, tool_changes
    from replaywatch.compare.explain import explain as explain_lines

    try:
        config = CompareConfig.build(tokens_tolerance, cost_tolerance, tuple(ignore or ()), usage=usage)
        if latency_tolerance is not None:
            config = dataclasses.replace(config, latency_tolerance=latency_tolerance)
        if comparators:
            config = policy.parse({"default": {"compare": policy.comparator_flags(comparators)}}, config, "--compare")
        if policy_file is not None:
            config = policy.load(policy_file, config)
    except UsageError as exc:
        fail(str(exc))
    base_attempt = _load_attempt(baseline, 1)
    cur_attempt = _load_attempt(current, 2)
    cur_attempt = cur_attempt._replace(provider=provider or cur_attempt.provider,
                                       provider_version=provider_version or cur_attempt.provider_version)  # fmt: skip
    words: list[str] = []
    try:
        config = config.select(cur_attempt.provider, cur_attempt.provider_version, cur_attempt.step_id)
        base_p = prepare(base_attempt.number, base_attempt.output_snapshot, base_attempt.tool_events, config,
                         base_attempt.latency_ms)  # fmt: skip
        cur_p = prepare(cur_attempt.number, cur_attempt.output_snapshot, cur_attempt.tool_events, config,
                        cur_attempt.latency_ms)  # fmt: skip
        result = compare_prepared(base_attempt.run_id, base_attempt.step_id, base_p, cur_p, config)
        out: dict[str, Any] = result.summary()
        if show_diff:
            diff = parse_json(result.diff.body) if result.diff else None
            out["diff"] = diff
            if not result.tool_events_equal:
                changes = tool_changes.classify(
                    None if base_p.tool_fp is None else parse_json(base_p.tool_fp),
                    None if cur_p.tool_fp is None else parse_json(cur_p.tool_fp),
                )
                words += ["tool events:"] + [f"  {line}" for line in tool_changes.describe(changes)]
        if explain:
            words += explain_lines(result, base_p, cur_p, config)
    except Exception as exc:  # whatever the input, one line and exit 2, never a traceback
        fail(f"cannot compare {baseline} with {current}: {type(exc).__name__}: {exc}")
    sys.stdout.buffer.write(orjson.dumps(out, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()
    for line in words:
        typer.echo(line, err=True)
    raise typer.Exit(0 if result.verdict.value == "within_tolerance" else 1)


app.add_typer(devstack_app, name="devstack")

# Flags for `run` and the other commands that talk to the stack. Each one falls back to
# its REPLAYWATCH_* environment variable, then to the default in config.Settings.
Bootstrap = Annotated[str | None, typer.Option("--kafka-bootstrap", help="[env REPLAYWATCH_KAFKA_BOOTSTRAP]")]
InputTopic = Annotated[str | None, typer.Option("--input-topic", help="[env REPLAYWATCH_INPUT_TOPIC]")]
OutputTopic = Annotated[str | None, typer.Option("--output-topic", help="[env REPLAYWATCH_OUTPUT_TOPIC]")]
GroupId = Annotated[str | None, typer.Option("--group-id", help="[env REPLAYWATCH_GROUP_ID]")]
PostgresDsn = Annotated[str | None, typer.Option("--postgres-dsn", help="[env REPLAYWATCH_POSTGRES_DSN]")]
PostgresSchema = Annotated[str | None, typer.Option("--postgres-schema", help="[env REPLAYWATCH_POSTGRES_SCHEMA]")]


def _settings(**overrides: object) -> Settings:
    dsn = overrides.get("postgres_dsn")
    if isinstance(dsn, str) and urlsplit(dsn).password:
        fail(
            "--postgres-dsn holds a password, which any user can read in `ps`: give the DSN in "
            "REPLAYWATCH_POSTGRES_DSN or a file of REPLAYWATCH_SECRETS_DIR, or the password in PGPASSWORD or ~/.pgpass"
        )
    try:
        return load_settings(**overrides)
    except UsageError as exc:
        fail(str(exc))


class OncePer:
    """A log filter that lets the same message through once per ``seconds``: a broker
    outage makes aiokafka log the same connection error many times a second.

    "The same" is the formatted text, not the template: two rebalances a second apart
    log different partitions with one template, and both must be seen."""

    def __init__(self, seconds: float, remembered: int = 10_000) -> None:
        self.seconds = seconds
        self.remembered = remembered
        self._last: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        import time

        key = (record.name, record.getMessage()[:500])
        now = time.monotonic()
        if now - self._last.get(key, -1e9) < self.seconds:
            return False
        if len(self._last) >= self.remembered:
            self._last.clear()
        self._last[key] = now
        return True


class DemoteLibraryNoise:
    """aiokafka logs some events of normal operation at ERROR: a coordinator looked up
    again while the group forms or as the consumer leaves at shutdown. Those records
    become DEBUG (shown only with REPLAYWATCH_LOG_LEVEL=DEBUG); every other record of
    the library is left as it is."""

    NOISE = ("GroupCoordinatorNotAvailableError", "NotCoordinatorForGroupError", "CoordinatorNotAvailable",
             "Coordinator load in progress")  # fmt: skip

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("aiokafka") and record.levelno >= logging.WARNING:
            text = record.getMessage()
            if any(n in text for n in self.NOISE):
                record.levelno, record.levelname = logging.DEBUG, "DEBUG"
                return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


def _with_store(settings: Settings, use: Any) -> Any:
    """Connect to PostgreSQL, run ``await use(store)``, close; errors end the command."""

    async def main() -> Any:
        store = await PostgresStore.connect(
            settings.postgres_url(), schema=settings.postgres_schema, group_id=settings.group_id,
            topic=settings.input_topic,
        )  # fmt: skip
        try:
            return await use(store)
        finally:
            await store.close()

    try:
        return asyncio.run(main())
    except ReplaywatchError as exc:
        fail(str(exc), 1)


def _configure_logging(level: str, fmt: str = "text") -> None:
    """Text lines, or one JSON object per line (python-json-logger: the standard logging
    module's records, with the ``extra`` fields a call gives: partition, offset, ...)."""
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True
    )
    if fmt == "json":
        from pythonjsonlogger.json import JsonFormatter

        formatter = JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
        for handler in logging.getLogger().handlers:
            handler.setFormatter(formatter)
    for name in ("aiokafka", "asyncpg"):
        logging.getLogger(name).setLevel(logging.WARNING if level != "DEBUG" else logging.DEBUG)
    for handler in logging.getLogger().handlers:
        handler.addFilter(DemoteLibraryNoise())
        handler.addFilter(OncePer(10.0))


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
    _configure_logging(settings.log_level, settings.log_format)
    telemetry.setup(max_links=settings.batch_size)
    tune_gc()

    async def serve(stop: asyncio.Event) -> None:
        pipeline = Pipeline(settings)
        async with serving(settings.http_host, settings.http_port, pipeline.readiness):
            await pipeline.run(stop)

    try:
        asyncio.run(_until_signalled(settings, serve))
    except UsageError as exc:
        fail(str(exc))
    finally:
        telemetry.shutdown()


def tune_gc() -> None:
    """Keep the cyclic garbage collector off the hot path.

    Each decoded record allocates hundreds of containers (its parsed snapshot); with
    CPython's default thresholds every few hundred records start a collection. The
    step cache keeps its snapshots as bytes (``PreparedAttempt``), so what is parsed
    dies young, freed by reference counting. Freezing what exists after start-up and
    collecting the young generation less often leaves the collector for what actually
    makes cycles (asyncio and client objects): measured, one young collection in 25 s
    at 1,000 events/s.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)


def _quiet_client_futures(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """aiokafka leaves some internal futures' errors unretrieved (a failed transaction's
    offsets, say); the error has been raised to replaywatch already and handled there,
    so asyncio's report with a traceback is noise: one DEBUG line instead."""
    from aiokafka.errors import KafkaError

    if isinstance(context.get("exception"), KafkaError) and "never retrieved" in context.get("message", ""):
        logging.getLogger("replaywatch.cli").debug("unretrieved Kafka client error: %r", context["exception"])
        return
    loop.default_exception_handler(context)


async def _until_signalled(settings: Settings, work: Callable[[asyncio.Event], Awaitable[T]]) -> T | None:
    """Run the pipeline (``work``) until it ends, or until SIGTERM or SIGINT, then stop
    within the grace period (None when it had to be cancelled).

    The pipeline first stops gracefully: it finishes the write in flight and publishes
    what is committed. After ``REPLAYWATCH_SHUTDOWN_SECONDS`` it is cancelled, and if
    even that does not end it (a client stuck on a dead service), the process exits
    1.5 s later. Either way the exit status is 0: PostgreSQL holds what was committed,
    and the next owner of the partitions resumes from there.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None
    log = logging.getLogger("replaywatch.cli")

    def hard_exit() -> None:
        log.warning("stopped: clients did not close in time; PostgreSQL holds what was committed")
        logging.shutdown()
        os._exit(0)

    def on_signal() -> None:
        if stop.is_set():
            return
        stop.set()
        loop.call_later(settings.shutdown_seconds, main.cancel)
        watchdog = threading.Timer(settings.shutdown_seconds + 1.5, hard_exit)
        watchdog.daemon = True
        watchdog.start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    loop.set_exception_handler(_quiet_client_futures)
    try:
        return await work(stop)
    except asyncio.CancelledError:
        if not stop.is_set():
            raise
        log.warning(
            "stopped after %.0fs without finishing the work in flight; PostgreSQL holds what was committed",
            settings.shutdown_seconds,
        )
        return None
    except GaveUp as exc:  # a service was still down when the signal came (at start, say)
        if not stop.is_set():
            raise
        log.warning("stopped while waiting for a service (%s); PostgreSQL holds what was committed", exc)
        return None


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

    applied: list[int] = _with_store(settings, work)
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


@app.command()
def tail(
    kafka_bootstrap: Bootstrap = None,
    output_topic: OutputTopic = None,
    until: Annotated[int | None, typer.Option(help="Stop after this many distinct events.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    from_beginning: Annotated[bool, typer.Option(help="Read the topic from its start.")] = True,
    verdict: Annotated[list[str] | None, typer.Option("--verdict", help="Only this verdict (repeatable).")] = None,
    run: Annotated[str | None, typer.Option("--run", help="Only this run.")] = None,
    provider: Annotated[str | None, typer.Option("--provider", help="Only attempts of this provider.")] = None,
    only_drift: Annotated[bool, typer.Option("--only-drift", help="Everything but within_tolerance.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One event a line, as JSON, for scripts.")] = False,
    rows: Annotated[int, typer.Option(help="Rows of the table.")] = 20,
) -> None:
    """Show a live, coloured table of verdicts from the output topic: the last drifts
    and divergences, and the counts of every verdict."""
    from replaywatch.compare import Verdict
    from replaywatch.stream.kafka_client import client_options
    from replaywatch.views.tail import Filters
    from replaywatch.views.tail import tail as run_tail

    known = {v.value for v in Verdict}
    if bad := sorted(set(verdict or ()) - known):
        fail(f"unknown verdict {bad[0]!r}; use one of {', '.join(sorted(known))}")
    settings = _settings(kafka_bootstrap=kafka_bootstrap, output_topic=output_topic)
    keep = Filters(frozenset(verdict or ()), run, provider, only_drift)
    counts = asyncio.run(
        run_tail(client_options(settings), settings.output_topic, until=until, timeout=timeout,
                 from_beginning=from_beginning, keep=keep, as_json=as_json, rows=rows)
    )  # fmt: skip
    if not as_json:
        typer.echo("summary:", err=True)
        for k, v in sorted(counts.items()):
            typer.echo(f"  {k}: {v}", err=True)
    if until is not None and sum(v for k, v in counts.items() if not k.startswith("(")) < until:
        fail(f"saw {sum(counts.values())} events before the timeout, expected {until}", 1)


@app.command()
def report(
    run_id: Annotated[str | None, typer.Option("--run", help="The run to report on.")] = None,
    rules: Annotated[bool, typer.Option("--rules", help="How often each ignore rule matched, by policy.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The run's report as one JSON object.")] = False,
    only_drift: Annotated[bool, typer.Option("--only-drift", help="List no within_tolerance comparison.")] = False,
    group_id: GroupId = None,
    postgres_dsn: PostgresDsn = None,
    postgres_schema: PostgresSchema = None,
) -> None:
    """Each step's state and verdicts for one run (--run), or the ignore rules' matches
    (--rules), from PostgreSQL."""
    from rich.console import Console

    from replaywatch.views.report import report as run_report
    from replaywatch.views.report import rules_report

    if (run_id is None) == (not rules):
        fail("give --run RUN_ID or --rules")
    settings = _settings(postgres_dsn=postgres_dsn, postgres_schema=postgres_schema, group_id=group_id)
    if rules:
        silent: bool = _with_store(settings, lambda store: rules_report(store, Console()))
        raise typer.Exit(0 if not silent else 1)
    run = str(run_id)
    ok: bool = _with_store(
        settings, lambda store: run_report(store, run, Console(), as_json=as_json, only_drift=only_drift)
    )
    raise typer.Exit(0 if ok else 1)


# `replaywatch diff` exit statuses: 0 shown, 2 usage, 3 not found, 4 corrupt, 5 S3 unreachable
DIFF_NOT_FOUND, DIFF_CORRUPT, DIFF_UNREACHABLE = 3, 4, 5


@app.command()
def diff(
    target: Annotated[str, typer.Argument(help="A diff's sha256 (or its s3:// URI), or a comparison's event id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw diff object.")] = False,
    postgres_dsn: PostgresDsn = None,
    postgres_schema: PostgresSchema = None,
) -> None:
    """Fetch a diff from S3 and show it: a structure diff as its patch with before and
    after, an attestation diff as missing and unexpected ids, a tool diff as calls added,
    removed, moved and changed. Exit 0 shown, 3 not found, 4 corrupt, 5 S3 unreachable."""
    from contextlib import AsyncExitStack

    from rich.console import Console

    from replaywatch.exceptions import NotFound, TransientError
    from replaywatch.views import show_diff

    try:
        kind, value = show_diff.parse_target(target)
    except ValueError as exc:
        fail(str(exc))
    settings = _settings(postgres_dsn=postgres_dsn, postgres_schema=postgres_schema)

    async def main() -> tuple[str, dict[str, Any]]:
        sha = value
        if kind == "event":
            store = await PostgresStore.connect(settings.postgres_url(),
                                                schema=settings.postgres_schema, group_id=settings.group_id,
                                                topic=settings.input_topic, pool_size=1)  # fmt: skip
            try:
                sha = await show_diff.sha_of_event(store, value)
            finally:
                await store.close()
        async with AsyncExitStack() as stack:
            artifacts = await stack.enter_async_context(_artifacts(settings))
            return sha, await show_diff.fetch(artifacts, sha)

    try:
        sha, doc = asyncio.run(main())
    except NotFound as exc:
        fail(str(exc), DIFF_NOT_FOUND)
    except show_diff.CorruptDiff as exc:
        fail(str(exc), DIFF_CORRUPT)
    except TransientError as exc:
        fail(f"S3 could not be reached: {exc}", DIFF_UNREACHABLE)
    except ReplaywatchError as exc:
        fail(str(exc), 1)
    if as_json:
        sys.stdout.buffer.write(show_diff.dump_json(doc) + b"\n")
        return
    show_diff.show(doc, sha, Console())


@app.command()
def serve(
    host: Annotated[str | None, typer.Option("--host", help="[env REPLAYWATCH_SERVE_HOST]")] = None,
    port: Annotated[int | None, typer.Option("--port", help="[env REPLAYWATCH_SERVE_PORT]")] = None,
    postgres_dsn: PostgresDsn = None,
    postgres_schema: PostgresSchema = None,
) -> None:
    """A read-only web view: recent comparisons, a run's outcome, a comparison with its
    diff, verdict counts over the last hour. Reads PostgreSQL and S3; writes nothing."""
    from contextlib import AsyncExitStack

    from replaywatch.views.web import create_app, serving
    from replaywatch.views.web_access import Access

    settings = _settings(serve_host=host, serve_port=port, postgres_dsn=postgres_dsn, postgres_schema=postgres_schema)
    _configure_logging(settings.log_level, settings.log_format)
    try:
        access = Access.of(
            bind=settings.serve_host, mode=settings.serve_auth, header=settings.serve_auth_header,
            token=settings.serve_token.get_secret_value() if settings.serve_token else None,
            hosts=settings.serve_allowed_hosts,
        )  # fmt: skip
    except UsageError as exc:
        fail(str(exc))

    async def main(stop: asyncio.Event) -> dict[str, Any]:
        async with AsyncExitStack() as stack:
            store = await PostgresStore.connect(settings.postgres_url(),
                                                schema=settings.postgres_schema, group_id=settings.group_id,
                                                topic=settings.input_topic, read_only=True)  # fmt: skip
            stack.push_async_callback(store.close)
            artifacts = await stack.enter_async_context(_artifacts(settings))
            web = create_app(store, artifacts, access)
            bound = await stack.enter_async_context(serving(web, settings.serve_host, settings.serve_port))
            typer.echo(f"replaywatch serve: http://{settings.serve_host}:{bound}/ (read-only, authentication: "
                       f"{access.mode})", err=True)  # fmt: skip
            await stop.wait()
        return {}

    try:
        asyncio.run(_until_signalled(settings, main))
    except ReplaywatchError as exc:
        fail(str(exc), 1)


def _artifacts(settings: Settings) -> Any:
    """The S3 diff store for reading (the bucket is neither checked nor created)."""
    from replaywatch.runtime.adapters import open_diff_store

    return open_diff_store(settings, check_bucket=False)


def main() -> None:
    app()


# Replays: backfill, re-scoring, rebuild (replay/). Exit 0 when the job is done, 130 when
# it was interrupted (its state is consistent: the same command resumes it), 1 or 2 on
# errors, as everywhere.
INTERRUPTED = 130


def _print_summary(summary: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(summary) + b"\n")
        sys.stdout.flush()
        return
    skip = {"steps", "ranges"}
    text = ", ".join(f"{k}={v}" for k, v in summary.items() if k not in skip)
    typer.echo(f"{summary.get('kind', 'replay')}: {text}", err=True)
    if summary.get("state") == "interrupted":
        typer.echo("interrupted: run the same command again to resume from the checkpoint", err=True)


def _replay(settings: Settings, work: Callable[[asyncio.Event], Awaitable[dict[str, Any]]], as_json: bool) -> None:
    _configure_logging(settings.log_level, settings.log_format)
    try:
        summary = asyncio.run(_until_signalled(settings, work))
    except UsageError as exc:
        fail(str(exc))
    except ReplaywatchError as exc:
        fail(str(exc), 1)
    if summary is None:
        raise typer.Exit(INTERRUPTED)
    _print_summary(summary, as_json)
    raise typer.Exit(INTERRUPTED if summary.get("state") == "interrupted" else 0)


@app.command()
def backfill(
    start: Annotated[
        str, typer.Option("--from", help="beginning | OFFSET | P:OFFSET,... | ISO-8601 time (no zone: UTC).")
    ] = "beginning",
    end: Annotated[
        str, typer.Option("--to", help="now | OFFSET | P:OFFSET,... | ISO-8601 time; exclusive; now = at first start.")
    ] = "now",
    partitions: Annotated[str | None, typer.Option(help="Partitions to read, e.g. 0,2,5 (default: all).")] = None,
    output_topic: Annotated[
        str | None, typer.Option("--output-topic", help="Where to publish (default: the live output topic).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print what would be published; change nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a machine-readable summary on stdout.")] = False,
    dead_letter: Annotated[
        bool,
        typer.Option("--dead-letter", help="Dead-letter bad records (a range the live consumer never read)."),
    ] = False,
    rescore: Annotated[
        bool, typer.Option("--rescore", help="Re-score the range under the settings given here; see --apply.")
    ] = False,
    apply: Annotated[bool, typer.Option("--apply", help="With --rescore: publish the flipped comparisons.")] = False,
    report_file: Annotated[
        Path | None, typer.Option("--report", help="With --rescore: write the report (JSON) here.")
    ] = None,
    tokens_tolerance: Annotated[float | None, typer.Option(help="With --rescore: the tolerance to try.")] = None,
    cost_tolerance: Annotated[float | None, typer.Option(help="With --rescore: the tolerance to try.")] = None,
    ignore: Annotated[list[str] | None, typer.Option("--ignore", help="With --rescore: ignore paths to try.")] = None,
    comparison_base: Annotated[str | None, typer.Option(help="With --rescore: first|previous.")] = None,
    rescore_policy: Annotated[
        Path | None, typer.Option("--policy", help="With --rescore: a policy file to try (comparators, tolerances).")
    ] = None,
    list_jobs: Annotated[
        bool, typer.Option("--list", help="List the replay jobs that never finished and what each left unpublished.")
    ] = False,
    publish_job: Annotated[
        str | None, typer.Option("--publish-job", help="Publish what an abandoned job committed, then close it.")
    ] = None,
    kafka_bootstrap: Bootstrap = None,
    input_topic: InputTopic = None,
    group_id: GroupId = None,
    postgres_dsn: PostgresDsn = None,
    postgres_schema: PostgresSchema = None,
) -> None:
    """Re-read a range of the input topic and publish only what was never published.

    Safe beside `replaywatch run`. Ctrl-C stops cleanly; the same command resumes.
    With --rescore, report (and with --apply publish) what other settings change."""
    from replaywatch.replay.backfill import backfill as run_backfill
    from replaywatch.replay.backfill import dry_run as run_dry
    from replaywatch.replay.jobs import ReplaySpec
    from replaywatch.replay.rescore import rescore as run_rescore

    settings = _settings(kafka_bootstrap=kafka_bootstrap, input_topic=input_topic, group_id=group_id,
                         postgres_dsn=postgres_dsn, postgres_schema=postgres_schema)  # fmt: skip
    _abandoned_jobs(settings, list_jobs, publish_job, as_json)
    spec = ReplaySpec(start, end, partitions, output_topic)
    tried = {"tokens_tolerance": tokens_tolerance, "cost_tolerance": cost_tolerance,
             "ignore_paths": tuple(ignore) if ignore else None, "comparison_base": comparison_base,
             "policy_file": rescore_policy}  # fmt: skip
    if not rescore:
        if apply or report_file or any(v is not None for v in tried.values()):
            fail("--apply, --report and other comparison settings go with --rescore; a backfill uses the live ones")
        if dry_run:
            events: list[dict[str, Any]] = []

            def emit(event: dict[str, Any]) -> None:
                if as_json:
                    events.append(event)
                else:
                    typer.echo(
                        f"would publish {event['event_id']} {event['verdict']:<22} run={event['run_id']} "
                        f"step={event['step_id']} attempts {event['baseline_attempt']}->{event['current_attempt']} "
                        f"(p{event['source_partition']}@{event['source_offset']})"
                    )

            async def dry(stop: asyncio.Event) -> dict[str, Any]:
                summary = await run_dry(settings, spec, emit)
                return summary | ({"events": events} if as_json else {})

            _replay(settings, dry, as_json)
        _replay(settings, lambda stop: run_backfill(settings, spec, stop, dead_letter=dead_letter), as_json)
    if dry_run:
        fail("--rescore reports without --apply already: leave out --dry-run")
    new = _settings(kafka_bootstrap=kafka_bootstrap, input_topic=input_topic, group_id=group_id,
                    postgres_dsn=postgres_dsn, postgres_schema=postgres_schema, **tried)  # fmt: skip
    if new.compare_config().fingerprint() == settings.compare_config().fingerprint():
        fail("--rescore needs other settings than the live ones (--tokens-tolerance, --cost-tolerance, --ignore, "
             "--comparison-base, --policy)")  # fmt: skip
    _replay(
        settings,
        lambda stop: run_rescore(settings, new, spec, stop, apply=apply, report_path=report_file),
        as_json,
    )


def _abandoned_jobs(settings: Settings, list_jobs: bool, publish: str | None, as_json: bool) -> None:
    """``backfill --list`` and ``--publish-job``: each ends the command."""
    from replaywatch.replay import backfill as replays

    if list_jobs and publish is not None:
        fail("--list and --publish-job go one at a time")
    if list_jobs:

        async def listed(stop: asyncio.Event) -> dict[str, Any]:
            jobs = await replays.list_jobs(settings)
            if not as_json:
                for j in jobs:
                    typer.echo(f"{j['job']:<36} {j['kind']:<9} since {j['created_at'][:19]}  "
                               f"unpublished {j['unpublished']}  -> {j['output_topic']}")  # fmt: skip
            return {"kind": "jobs", "state": "listed", "unfinished": len(jobs)} | ({"jobs": jobs} if as_json else {})

        _replay(settings, listed, as_json)
    if publish is not None:
        _replay(settings, lambda stop: replays.publish_job(settings, publish, stop), as_json)


@app.command()
def rebuild(
    as_json: Annotated[bool, typer.Option("--json", help="Print a machine-readable summary on stdout.")] = False,
    kafka_bootstrap: Bootstrap = None,
    input_topic: InputTopic = None,
    group_id: GroupId = None,
    postgres_dsn: PostgresDsn = None,
    postgres_schema: PostgresSchema = None,
) -> None:
    """Build the step projections again from the topic and swap them in at once.

    Safe beside `replaywatch run`; readers see the old table or the new one. Ctrl-C
    stops cleanly; the same command resumes."""
    from replaywatch.replay.rebuild import rebuild as run_rebuild

    settings = _settings(kafka_bootstrap=kafka_bootstrap, input_topic=input_topic, group_id=group_id,
                         postgres_dsn=postgres_dsn, postgres_schema=postgres_schema)  # fmt: skip
    _replay(settings, lambda stop: run_rebuild(settings, stop), as_json)
