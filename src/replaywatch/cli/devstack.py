"""``replaywatch devstack up|down|status|env|start|stop|logs``."""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path
from typing import Annotated

import typer

from replaywatch.devstack.stack import SERVICES, Stack, default_dir
from replaywatch.exceptions import DevstackError

devstack_app = typer.Typer(
    help="Start and stop the local stack (Kafka, PostgreSQL, S3, a schema registry).", no_args_is_help=True
)

DirOption = Annotated[
    Path | None,
    typer.Option("--dir", envvar="REPLAYWATCH_DEVSTACK_DIR", help="State directory.", show_default=False),
]


def _stack(dir: Path | None) -> Stack:
    return Stack(dir or default_dir())


def _fail(exc: DevstackError) -> None:
    typer.echo(f"replaywatch devstack: error: {exc}", err=True)
    raise typer.Exit(1)


@devstack_app.command()
def up(dir: DirOption = None) -> None:
    """Start Kafka, PostgreSQL, S3 and the schema registry (keeps data from an earlier run)."""
    t0 = time.monotonic()
    try:
        took = _stack(dir).start()
    except DevstackError as exc:
        _fail(exc)
    parts = ", ".join(f"{k} {v:.1f}s" for k, v in took.items()) or "already running"
    typer.echo(f"devstack up in {time.monotonic() - t0:.1f}s ({parts})", err=True)


@devstack_app.command()
def down(
    dir: DirOption = None,
    purge: Annotated[bool, typer.Option(help="Also delete the state directory (data, ports).")] = False,
) -> None:
    """Stop exactly the processes that 'up' started."""
    stack = _stack(dir)
    try:
        if purge:
            stack.purge()
            typer.echo("devstack stopped and purged", err=True)
        else:
            stopped = stack.stop()
            typer.echo(f"devstack stopped: {', '.join(stopped) or 'nothing was running'}", err=True)
    except DevstackError as exc:
        _fail(exc)


@devstack_app.command()
def start(
    service: Annotated[str, typer.Argument(help=f"One of {', '.join(SERVICES)}.")], dir: DirOption = None
) -> None:
    """Start one service again, with its data kept."""
    try:
        took = _stack(dir).start(service)
    except DevstackError as exc:
        _fail(exc)
    typer.echo(f"{service} started in {took.get(service, 0):.1f}s", err=True)


@devstack_app.command()
def stop(service: Annotated[str, typer.Argument(help=f"One of {', '.join(SERVICES)}.")], dir: DirOption = None) -> None:
    """Stop one service, keeping its data."""
    try:
        stopped = _stack(dir).stop(service)
    except DevstackError as exc:
        _fail(exc)
    typer.echo(f"{service} {'stopped' if stopped else 'was not running'}", err=True)


@devstack_app.command()
def status(dir: DirOption = None) -> None:
    """Show each service, its PID and port."""
    for name, st in _stack(dir).status().items():
        typer.echo(f"{name:9} {'up  ' if st['running'] else 'down'} pid={st['pid']} port={st['port']}")


@devstack_app.command()
def env(dir: DirOption = None) -> None:
    """Print the endpoints as shell variables (eval "$(replaywatch devstack env)")."""
    for k, v in _stack(dir).env().items():
        typer.echo(f"export {k}={shlex.quote(v)}")


@devstack_app.command()
def logs(
    service: Annotated[str | None, typer.Argument(help=f"One of {', '.join(SERVICES)}; all by default.")] = None,
    lines: Annotated[int, typer.Option(help="Lines shown per service, the last ones.")] = 40,
    match: Annotated[
        str | None, typer.Option(help="Only lines this regular expression finds, e.g. 'response_code=\"[45]'.")
    ] = None,
    dir: DirOption = None,
) -> None:
    """Print the last lines of each service's log (what to read when a test or a start fails)."""
    stack = _stack(dir)
    try:
        pattern = re.compile(match) if match else None
    except re.error as exc:
        typer.echo(f"replaywatch devstack: error: --match is not a regular expression: {exc}", err=True)
        raise typer.Exit(2) from None
    for name in [service] if service else SERVICES:
        if name not in SERVICES:
            typer.echo(f"replaywatch devstack: error: no service {name!r}; one of {', '.join(SERVICES)}", err=True)
            raise typer.Exit(2)
        log = stack.service(name).log
        try:
            text = log.read_text(errors="replace").splitlines()
        except OSError:
            text = []
        shown = [line for line in text if pattern is None or pattern.search(line)][-lines:] if lines > 0 else []
        typer.echo(f"==> {name}: {log} ({len(shown)} of {len(text)} lines) <==")
        for line in shown:
            typer.echo(line)
