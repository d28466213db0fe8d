"""The ``replaywatch`` command line: the Typer app, the flags the commands share, and
how a command fails.

Typer (on Click) gives typed options, ``--help`` for free and exit status 2 for usage
errors, which is what scripts expect. Each family of commands is a module of this
package (``run``, ``replay``, ``inspect``, ``devstack``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, NoReturn, TypeVar
from urllib.parse import urlsplit

import typer

from replaywatch.config import Settings, load_settings
from replaywatch.exceptions import ReplaywatchError, UsageError
from replaywatch.runtime.adapters import with_store
from replaywatch.store.postgres import PostgresStore

T = TypeVar("T")

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


# Flags for `run` and the other commands that talk to the stack. Each one falls back to
# its REPLAYWATCH_* environment variable, then to the default in config.Settings.
Bootstrap = Annotated[str | None, typer.Option("--kafka-bootstrap", help="[env REPLAYWATCH_KAFKA_BOOTSTRAP]")]
InputTopic = Annotated[str | None, typer.Option("--input-topic", help="[env REPLAYWATCH_INPUT_TOPIC]")]
OutputTopic = Annotated[str | None, typer.Option("--output-topic", help="[env REPLAYWATCH_OUTPUT_TOPIC]")]
GroupId = Annotated[str | None, typer.Option("--group-id", help="[env REPLAYWATCH_GROUP_ID]")]
PostgresDsn = Annotated[str | None, typer.Option("--postgres-dsn", help="[env REPLAYWATCH_POSTGRES_DSN]")]
PostgresSchema = Annotated[str | None, typer.Option("--postgres-schema", help="[env REPLAYWATCH_POSTGRES_SCHEMA]")]


def settings_from(**overrides: object) -> Settings:
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


def run_with_store(settings: Settings, use: Callable[[PostgresStore], Awaitable[T]]) -> T:
    """Connect to PostgreSQL, run ``await use(store)``, close; an error ends the command."""
    try:
        return asyncio.run(with_store(settings, use))
    except ReplaywatchError as exc:
        fail(str(exc), 1)
