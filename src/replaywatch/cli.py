"""The ``replaywatch`` command line.

Typer (on Click) gives typed options, ``--help`` for free and exit status 2 for
usage errors, which is what scripts expect.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import orjson
import typer

from replaywatch.compare import ABSENT, Attempt, CompareConfig, compare_attempts, parse_json
from replaywatch.devstack.cli import devstack_app
from replaywatch.exceptions import ReplaywatchError, UsageError

app = typer.Typer(
    help="Watch fleets of AI agents for replay drift.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


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
    return Attempt(
        run_id=str(doc.get("run_id", "")),
        step_id=str(doc.get("step_id", "")),
        attempt=attempt,
        output_snapshot=snapshot,
        tool_events=doc.get("tool_events", ABSENT),
    )


@app.command()
def compare(
    baseline: Annotated[Path, typer.Argument(help="JSON file of the baseline attempt.")],
    current: Annotated[Path, typer.Argument(help="JSON file of the current attempt.")],
    tokens_tolerance: Annotated[float, typer.Option(help="Allowed relative token change (0.01 = 1%).")] = 0.0,
    cost_tolerance: Annotated[float, typer.Option(help="Allowed relative cost change.")] = 0.0,
    ignore: Annotated[
        list[str] | None,
        typer.Option("--ignore", help="Path to leave out of structure/tool comparisons (repeatable)."),
    ] = None,
    show_diff: Annotated[bool, typer.Option(help="Also print the diff object.")] = False,
) -> None:
    """Compare two attempts of a step. Exit 0 within tolerance, 1 drift or divergence,
    2 bad input."""
    try:
        config = CompareConfig.build(tokens_tolerance, cost_tolerance, tuple(ignore or ()))
    except UsageError as exc:
        fail(str(exc))
    recorded = _load_attempt(baseline, 1)
    now = _load_attempt(current, 2)
    result = compare_attempts(recorded, now, config)
    out: dict[str, Any] = result.summary()
    if show_diff:
        out["diff"] = orjson.loads(result.diff.body) if result.diff else None
    sys.stdout.buffer.write(orjson.dumps(out, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()
    raise typer.Exit(0 if result.verdict.value == "within_tolerance" else 1)


app.add_typer(devstack_app, name="devstack")


def main() -> None:
    app()
