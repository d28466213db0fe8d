"""Replays of the input topic: ``backfill`` (with ``--rescore``, ``--list`` and
``--publish-job``) and ``rebuild``."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import typer

from replaywatch.cli.app import Bootstrap, GroupId, InputTopic, PostgresDsn, PostgresSchema, app, fail
from replaywatch.cli.app import settings_from as _settings
from replaywatch.cli.logs import configure_logging
from replaywatch.cli.process import run as run_loop
from replaywatch.cli.process import until_signalled
from replaywatch.config import Settings
from replaywatch.exceptions import ReplaywatchError, UsageError
from replaywatch.replay.jobs import ReplaySpec

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


def _replay(settings: Settings, work: Callable[[asyncio.Event], Awaitable[dict[str, Any]]], as_json: bool) -> NoReturn:
    configure_logging(settings.log_level, settings.log_format)
    try:
        summary = run_loop(settings, until_signalled(settings, work))
    except UsageError as exc:
        fail(str(exc))
    except ReplaywatchError as exc:
        fail(str(exc), 1)
    if summary is None:
        raise typer.Exit(INTERRUPTED)
    _print_summary(summary, as_json)
    raise typer.Exit(INTERRUPTED if summary.get("state") == "interrupted" else 0)


From = Annotated[str, typer.Option("--from", help="beginning | OFFSET | P:OFFSET,... | ISO-8601 time (no zone: UTC).")]
To = Annotated[
    str, typer.Option("--to", help="now | OFFSET | P:OFFSET,... | ISO-8601 time; exclusive; now = at first start.")
]
OutputTopicOverride = Annotated[
    str | None, typer.Option("--output-topic", help="Where to publish (default: the live output topic).")
]
DeadLetter = Annotated[
    bool,
    typer.Option("--dead-letter", help="Dead-letter bad records (a range the live consumer never read)."),
]
Rescore = Annotated[
    bool, typer.Option("--rescore", help="Re-score the range under the settings given here; see --apply.")
]
ReportFile = Annotated[Path | None, typer.Option("--report", help="With --rescore: write the report (JSON) here.")]
RescorePolicy = Annotated[
    Path | None, typer.Option("--policy", help="With --rescore: a policy file to try (comparators, tolerances).")
]
ListJobs = Annotated[
    bool, typer.Option("--list", help="List the replay jobs that never finished and what each left unpublished.")
]
PublishJob = Annotated[
    str | None, typer.Option("--publish-job", help="Publish what an abandoned job committed, then close it.")
]
Partitions = Annotated[str | None, typer.Option(help="Partitions to read, e.g. 0,2,5 (default: all).")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print what would be published; change nothing.")]
Apply = Annotated[bool, typer.Option("--apply", help="With --rescore: publish the flipped comparisons.")]
TryIgnore = Annotated[list[str] | None, typer.Option("--ignore", help="With --rescore: ignore paths to try.")]


@app.command()
def backfill(
    start: From = "beginning",
    end: To = "now",
    partitions: Partitions = None,
    output_topic: OutputTopicOverride = None,
    dry_run: DryRun = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a machine-readable summary on stdout.")] = False,
    dead_letter: DeadLetter = False,
    rescore: Rescore = False,
    apply: Apply = False,
    report_file: ReportFile = None,
    tokens_tolerance: Annotated[float | None, typer.Option(help="With --rescore: the tolerance to try.")] = None,
    cost_tolerance: Annotated[float | None, typer.Option(help="With --rescore: the tolerance to try.")] = None,
    ignore: TryIgnore = None,
    comparison_base: Annotated[str | None, typer.Option(help="With --rescore: first|previous.")] = None,
    rescore_policy: RescorePolicy = None,
    list_jobs: ListJobs = False,
    publish_job: PublishJob = None,
    kafka_bootstrap: Bootstrap = None,
    input_topic: InputTopic = None,
    group_id: GroupId = None,
    postgres_dsn: PostgresDsn = None,
    postgres_schema: PostgresSchema = None,
) -> None:
    """Re-read a range of the input topic and publish only what was never published.

    Safe beside `replaywatch run`. Ctrl-C stops cleanly; the same command resumes.
    With --rescore, report (and with --apply publish) what other settings change."""
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
        _backfill(settings, spec, dry_run, dead_letter, as_json)
    if dry_run:
        fail("--rescore reports without --apply already: leave out --dry-run")
    new = _settings(kafka_bootstrap=kafka_bootstrap, input_topic=input_topic, group_id=group_id,
                    postgres_dsn=postgres_dsn, postgres_schema=postgres_schema, **tried)  # fmt: skip
    _rescore(settings, new, spec, apply, report_file, as_json)


def _backfill(settings: Settings, spec: ReplaySpec, dry_run: bool, dead_letter: bool, as_json: bool) -> NoReturn:
    """A backfill, or with ``dry_run`` what it would publish."""
    from replaywatch.replay.backfill import backfill as run_backfill
    from replaywatch.replay.backfill import dry_run as run_dry

    if not dry_run:
        _replay(settings, lambda stop: run_backfill(settings, spec, stop, dead_letter=dead_letter), as_json)
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


def _rescore(live: Settings, new: Settings, spec: ReplaySpec, apply: bool, report: Path | None,
             as_json: bool) -> NoReturn:  # fmt: skip
    """A re-scoring of the range under ``new`` settings (published with ``apply``)."""
    from replaywatch.replay.rescore import rescore as run_rescore

    if new.compare_config().fingerprint() == live.compare_config().fingerprint():
        fail("--rescore needs other settings than the live ones (--tokens-tolerance, --cost-tolerance, --ignore, "
             "--comparison-base, --policy)")  # fmt: skip
    _replay(live, lambda stop: run_rescore(live, new, spec, stop, apply=apply, report_path=report), as_json)


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
