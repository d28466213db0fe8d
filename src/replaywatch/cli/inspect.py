"""Commands that look at what replaywatch said: ``compare`` (two attempts, offline),
``tail``, ``report``, ``diff`` and ``serve`` (the web view)."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

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
from replaywatch.cli.process import until_signalled
from replaywatch.codec import latency_of
from replaywatch.compare import ABSENT, Attempt, CompareConfig, Comparison, parse_json, prepare
from replaywatch.compare import compare as compare_prepared
from replaywatch.exceptions import ReplaywatchError, UsageError
from replaywatch.runtime.adapters import open_readers


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


LatencyTolerance = Annotated[
    float | None, typer.Option(help="Allowed relative latency change (latency_ms); off when not given.")
]
IgnorePaths = Annotated[
    list[str] | None,
    typer.Option("--ignore", help="Path to leave out of structure/tool comparisons (repeatable)."),
]
PolicyFile = Annotated[
    Path | None,
    typer.Option("--policy", help="Policy file (TOML/YAML): the rule matching the current attempt applies."),
]
ProviderVersion = Annotated[str | None, typer.Option(help="The current attempt's provider version (else its file's).")]
ShowDiff = Annotated[bool, typer.Option(help="Also print the diff object, and tool-event changes in words (stderr).")]
Comparators = Annotated[
    list[str] | None,
    typer.Option(
        "--compare",
        help="A comparator for a path, as a policy's [default.compare] writes it: PATH=KIND or "
        "PATH=KIND:threshold=0.8,abs=0.05,rel=0.1 (kinds: exact, text, words, semantic, number, set, ignore; "
        "repeatable).",
    ),
]
Explain = Annotated[bool, typer.Option(help="Say in words why the verdict is what it is (stderr).")]


@app.command()
def compare(
    baseline: Annotated[Path, typer.Argument(help="JSON file of the baseline attempt.")],
    current: Annotated[Path, typer.Argument(help="JSON file of the current attempt.")],
    tokens_tolerance: Annotated[float, typer.Option(help="Allowed relative token change (0.01 = 1%).")] = 0.0,
    cost_tolerance: Annotated[float, typer.Option(help="Allowed relative cost change.")] = 0.0,
    latency_tolerance: LatencyTolerance = None,
    ignore: IgnorePaths = None,
    usage: Annotated[str, typer.Option(help="Usage preset: reference, openai, gen_ai, anthropic or all.")] = (
        "reference"
    ),
    policy_file: PolicyFile = None,
    provider: Annotated[str | None, typer.Option(help="The current attempt's provider (else its file's).")] = None,
    provider_version: ProviderVersion = None,
    show_diff: ShowDiff = False,
    explain: Explain = False,
    comparators: Comparators = None,
) -> None:
    """Compare two attempts of a step. The summary is JSON on stdout; --explain and
    --show-diff add lines for people on stderr. Exit 0 within tolerance, 1 drift or
    divergence, 2 bad input."""
    from replaywatch.compare import policy

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
    try:
        out, words, result = _compare_attempts(base_attempt, cur_attempt, config, show_diff, explain)
    except Exception as exc:  # whatever the input, one line and exit 2, never a traceback
        fail(f"cannot compare {baseline} with {current}: {type(exc).__name__}: {exc}")
    sys.stdout.buffer.write(orjson.dumps(out, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()
    for line in words:
        typer.echo(line, err=True)
    raise typer.Exit(0 if result.verdict.value == "within_tolerance" else 1)


def _compare_attempts(
    base: Attempt, cur: Attempt, config: CompareConfig, show_diff: bool, explain: bool
) -> tuple[dict[str, Any], list[str], Comparison]:
    """(the summary, the lines for people, the comparison) of two attempts under the
    rule of ``config`` that the current one matches."""
    from replaywatch.compare import tool_changes
    from replaywatch.compare.explain import explain as explain_lines

    words: list[str] = []
    config = config.select(cur.provider, cur.provider_version, cur.step_id)
    base_p = prepare(base.number, base.output_snapshot, base.tool_events, config, base.latency_ms)
    cur_p = prepare(cur.number, cur.output_snapshot, cur.tool_events, config, cur.latency_ms)
    result = compare_prepared(base.run_id, base.step_id, base_p, cur_p, config)
    out: dict[str, Any] = result.summary()
    if show_diff:
        out["diff"] = parse_json(result.diff.body) if result.diff else None
        if not result.tool_events_equal:
            changes = tool_changes.classify(None if base_p.tool_fp is None else parse_json(base_p.tool_fp),
                                            None if cur_p.tool_fp is None else parse_json(cur_p.tool_fp))  # fmt: skip
            words += ["tool events:"] + [f"  {line}" for line in tool_changes.describe(changes)]
    if explain:
        words += explain_lines(result, base_p, cur_p, config)
    return out, words, result


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
    volatility: Annotated[
        bool, typer.Option("--volatility", help="Each cohort's flake rate, pass^k and the paths that vary most.")
    ] = False,
    suggest: Annotated[
        bool, typer.Option("--suggest", help="With --volatility: a policy rule per cohort (TOML), from its envelope.")
    ] = False,
    target: Annotated[
        float, typer.Option("--target", min=0.001, max=0.5, help="--suggest's false-alert share.")
    ] = 0.02,
    k: Annotated[int, typer.Option("--k", min=1, max=100, help="The k of pass^k.")] = 3,
    cohort: Annotated[str, typer.Option("--cohort", help="The cohorts to show, a glob: 'openai|*|*'.")] = "*",
    as_json: Annotated[bool, typer.Option("--json", help="The run's report as one JSON object.")] = False,
    only_drift: Annotated[bool, typer.Option("--only-drift", help="List no within_tolerance comparison.")] = False,
    group_id: GroupId = None,
    postgres_dsn: PostgresDsn = None,
    postgres_schema: PostgresSchema = None,
    input_topic: InputTopic = None,
) -> None:
    """Each step's state and verdicts for one run (--run), the ignore rules' matches
    (--rules), or the cohorts' volatility (--volatility), from PostgreSQL."""
    from rich.console import Console

    from replaywatch.views.report import report as run_report
    from replaywatch.views.report import rules_report
    from replaywatch.views.volatility import volatility_report

    if sum((run_id is not None, rules, volatility)) != 1:
        fail("give one of --run RUN_ID, --rules and --volatility")
    if suggest and not volatility:
        fail("--suggest goes with --volatility")
    settings = _settings(postgres_dsn=postgres_dsn, postgres_schema=postgres_schema, group_id=group_id,
                         input_topic=input_topic)  # fmt: skip
    if rules:
        silent: bool = run_with_store(settings, lambda store: rules_report(store.history, Console()))
        raise typer.Exit(0 if not silent else 1)
    if volatility:
        some: bool = run_with_store(settings, lambda store: volatility_report(
            store.history, Console(), k=k, cohort=cohort, suggest_target=target if suggest else None))  # fmt: skip
        raise typer.Exit(0 if some else 1)
    run = str(run_id)
    ok: bool = run_with_store(
        settings, lambda store: run_report(store.history, run, Console(), as_json=as_json, only_drift=only_drift)
    )
    raise typer.Exit(0 if ok else 1)


@app.command()
def rates(
    as_json: Annotated[bool, typer.Option("--json", help="The cohorts and open alerts as one JSON object.")] = False,
    cohort: Annotated[str, typer.Option("--cohort", help="The cohorts to show, a glob: 'openai|*|*'.")] = "*",
    postgres_dsn: PostgresDsn = None,
    postgres_schema: PostgresSchema = None,
    input_topic: InputTopic = None,
) -> None:
    """Each cohort's drift rate in its last judged window against its reference, most
    significant first, and the open alerts. Exit 0 with alerts open, 1 with none (so a
    script can page), 2 on a usage error."""
    import fnmatch

    from rich.console import Console

    from replaywatch.store.postgres import PostgresStore
    from replaywatch.views.rates import alerts_table, rates_json, rates_table

    settings = _settings(postgres_dsn=postgres_dsn, postgres_schema=postgres_schema, input_topic=input_topic)

    async def show(store: PostgresStore) -> bool:
        reader = store.history.rates
        rows = [r for r in await reader.cohorts() if fnmatch.fnmatchcase(r.cohort, cohort)]
        alerts = [a for a in await reader.alerts(open_only=True) if fnmatch.fnmatchcase(a["cohort"], cohort)]
        console = Console()
        if as_json:
            console.file.write(orjson.dumps(rates_json(rows, alerts), option=orjson.OPT_INDENT_2).decode() + "\n")
        elif not rows:
            console.print(f"no windows judged yet on {settings.input_topic} (rates are judged once final)")
        else:
            console.print(rates_table(rows, console.width))
            if alerts:
                console.print(alerts_table(alerts, console.width))
        return bool(alerts)

    raise typer.Exit(0 if run_with_store(settings, show) else 1)


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
    from rich.console import Console

    from replaywatch.exceptions import CorruptDiff, NotFound, TransientError
    from replaywatch.views import show_diff

    try:
        kind, value = show_diff.parse_target(target)
    except ValueError as exc:
        fail(str(exc))
    settings = _settings(postgres_dsn=postgres_dsn, postgres_schema=postgres_schema)

    async def main() -> tuple[str, dict[str, Any]]:
        async with open_readers(settings, pool_size=1) as (store, artifacts):
            sha = await show_diff.sha_of_event(store.history, value) if kind == "event" else value
            return sha, await show_diff.fetch(artifacts, sha)

    try:
        sha, doc = asyncio.run(main())
    except NotFound as exc:
        fail(str(exc), DIFF_NOT_FOUND)
    except CorruptDiff as exc:
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
    from replaywatch.views.web import create_app, serving_web
    from replaywatch.views.web_access import Access

    settings = _settings(serve_host=host, serve_port=port, postgres_dsn=postgres_dsn, postgres_schema=postgres_schema)
    configure_logging(settings.log_level, settings.log_format)
    try:
        access = Access.of(
            bind=settings.serve_host, mode=settings.serve_auth, header=settings.serve_auth_header,
            token=settings.serve_token.get_secret_value() if settings.serve_token else None,
            hosts=settings.serve_allowed_hosts,
        )  # fmt: skip
    except UsageError as exc:
        fail(str(exc))

    async def main(stop: asyncio.Event) -> dict[str, Any]:
        async with open_readers(settings) as (store, artifacts):
            web = create_app(store.history, artifacts, access)
            async with serving_web(web, settings.serve_host, settings.serve_port) as bound:
                typer.echo(f"replaywatch serve: http://{settings.serve_host}:{bound}/ (read-only, authentication: "
                           f"{access.mode})", err=True)  # fmt: skip
                await stop.wait()
        return {}

    try:
        asyncio.run(until_signalled(settings, main))
    except ReplaywatchError as exc:
        fail(str(exc), 1)
