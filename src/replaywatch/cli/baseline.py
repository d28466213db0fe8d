"""``replaywatch baseline``: operators' actions on the cohorts' noise envelopes.

- ``reset --cohort GLOB``: forget the envelopes; the cohorts warm up again as new ones;
- ``relearn --cohort GLOB``: forget them and learn the warm-up from every comparison
  but attestation divergences (the cohort changed for good: a new model version);
- ``list``: the actions taken, oldest first.

Each action is recorded (who, why, when) with the offsets it applies from: those
committed when it is taken. Running watchers take it up with their next batch (a batch
that committed meanwhile is prepared again, knowing it), and a replay of the same
offsets applies it at the same records.
"""

from __future__ import annotations

import getpass
from typing import Annotated

import orjson
import typer

from replaywatch.cli.app import GroupId, InputTopic, PostgresDsn, PostgresSchema, fail, run_with_store, settings_from
from replaywatch.envelope.adaptive import Action
from replaywatch.store.postgres import PostgresStore

baseline_app = typer.Typer(help="Reset or relearn the cohorts' noise envelopes (adaptive mode).", no_args_is_help=True)

Cohort = Annotated[str, typer.Option("--cohort", help="The cohorts, a glob of 'provider|version|kind' names.")]
Reason = Annotated[str | None, typer.Option("--reason", help="Why, for the record.")]


def _act(kind: str, cohort: str, reason: str | None, group_id: str | None, postgres_dsn: str | None,
         postgres_schema: str | None, input_topic: str | None) -> None:  # fmt: skip
    if not cohort.strip():
        fail("--cohort must name cohorts (a glob such as 'openai|*|refund', or '*' for all)")
    settings = settings_from(group_id=group_id, postgres_dsn=postgres_dsn, postgres_schema=postgres_schema,
                             input_topic=input_topic)  # fmt: skip
    try:
        user: str | None = getpass.getuser()
    except (KeyError, OSError):
        user = None

    async def act(store: PostgresStore) -> tuple[Action, int]:
        await store.migrate()
        envelopes = await store.history.envelopes()
        action = await store.act_on_envelopes(kind, cohort, user, reason)
        matched = len({c for _, c in envelopes if action.applies(c, -1, 2**62)})
        return action, matched

    action, matched = run_with_store(settings, act)
    typer.echo(f"{kind} #{action.id} recorded for cohorts {cohort!r} ({matched} with envelopes now), from offsets "
               f"{orjson.dumps({str(p): o for p, o in sorted(action.effective.items())}).decode()}")  # fmt: skip


@baseline_app.command()
def reset(cohort: Cohort, reason: Reason = None, group_id: GroupId = None, postgres_dsn: PostgresDsn = None,
          postgres_schema: PostgresSchema = None, input_topic: InputTopic = None) -> None:  # fmt: skip
    """Forget the envelopes of the cohorts --cohort matches: they warm up again."""
    _act("reset", cohort, reason, group_id, postgres_dsn, postgres_schema, input_topic)


@baseline_app.command()
def relearn(cohort: Cohort, reason: Reason = None, group_id: GroupId = None, postgres_dsn: PostgresDsn = None,
            postgres_schema: PostgresSchema = None, input_topic: InputTopic = None) -> None:  # fmt: skip
    """Forget them and learn the new normal: the warm-up learns from every comparison
    but attestation divergences."""
    _act("relearn", cohort, reason, group_id, postgres_dsn, postgres_schema, input_topic)


@baseline_app.command("list")
def list_actions(group_id: GroupId = None, postgres_dsn: PostgresDsn = None, postgres_schema: PostgresSchema = None,
                 input_topic: InputTopic = None) -> None:  # fmt: skip
    """The actions taken on envelopes, oldest first (one JSON object a line)."""
    settings = settings_from(group_id=group_id, postgres_dsn=postgres_dsn, postgres_schema=postgres_schema,
                             input_topic=input_topic)  # fmt: skip

    async def read(store: PostgresStore) -> list[dict[str, object]]:
        return [dict(r) | {"effective": orjson.loads(r["effective"])} for r in await store.history.envelope_actions()]

    for row in run_with_store(settings, read):
        typer.echo(orjson.dumps(row, default=str).decode())
