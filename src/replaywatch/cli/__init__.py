"""The ``replaywatch`` command line, a module per family of commands: ``run`` (the
service, migrations, the demo's producer), ``replay`` (backfill, re-scoring, rebuild),
``inspect`` (compare, tail, report, diff, serve), ``baseline`` (the cohorts' envelopes)
and ``devstack`` (the local stack)."""

from __future__ import annotations

from replaywatch.cli import inspect, replay, run  # noqa: F401  (each registers its commands)
from replaywatch.cli.app import app
from replaywatch.cli.baseline import baseline_app
from replaywatch.cli.devstack import devstack_app

app.add_typer(devstack_app, name="devstack")
app.add_typer(baseline_app, name="baseline")


def main() -> None:
    app()


__all__ = ["app", "main"]
