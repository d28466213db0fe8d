"""The read side of PostgreSQL, for the operators' views (``report``, ``diff``, the web
view): the history of comparisons, the steps of a run, the ignore rules' counts, the
cohorts' envelopes (which the store loads through it too). Reads only: ``serve`` runs it
on read-only transactions."""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

from replaywatch.envelope.model import CohortEnvelope
from replaywatch.store.errors import translate_postgres_errors
from replaywatch.store.rates_history import RatesHistory


class History:
    def __init__(self, pool: asyncpg.Pool, schema: str, group_id: str, topic: str) -> None:
        self._pool = pool
        self.schema = schema
        self._q = f'"{schema}"'
        self.group_id = group_id
        self.topic = topic

    @property
    def rates(self) -> RatesHistory:
        """What the views read of the drift rates of this topic."""
        return RatesHistory(self._pool, self.schema, self.topic)

    async def envelopes(self, partitions: Iterable[int] | None = None) -> dict[tuple[int, str], CohortEnvelope]:
        """The envelopes of this group on its input topic, by (partition, cohort): those of
        ``partitions``, or every one."""
        async with translate_postgres_errors("load envelopes"):
            rows = await self._pool.fetch(
                f"SELECT partition, cohort, state::text AS state FROM {self._q}.envelope "
                "WHERE group_id = $1 AND topic = $2 AND ($3::int[] IS NULL OR partition = ANY($3::int[]))",
                self.group_id, self.topic, None if partitions is None else list(partitions),
            )  # fmt: skip
        return {(r["partition"], r["cohort"]): CohortEnvelope.from_json(r["state"]) for r in rows}

    async def envelope_actions(self) -> list[asyncpg.Record]:
        """The operators' actions on envelopes, oldest first."""
        async with translate_postgres_errors("envelope actions"):
            return await self._pool.fetch(
                f"SELECT id, action, cohort, effective::text AS effective, by_user, reason, at "
                f"FROM {self._q}.envelope_action WHERE group_id = $1 AND topic = $2 ORDER BY id",
                self.group_id, self.topic,
            )  # fmt: skip

    async def rule_counts(self) -> list[asyncpg.Record]:
        """The ignore-rule statistics of this group, by policy and rule."""
        async with translate_postgres_errors("ignore rule statistics"):
            return await self._pool.fetch(
                f"SELECT policy, rule, comparisons, matches, updated_at FROM {self._q}.ignore_rule_stats "
                "WHERE group_id = $1 ORDER BY policy, rule",
                self.group_id,
            )

    async def recent_comparisons(
        self, *, verdict: str | None = None, run_id: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[asyncpg.Record]:
        """The latest comparisons of the history, newest first, by verdict and run."""
        async with translate_postgres_errors("recent comparisons"):
            return await self._pool.fetch(
                f"SELECT * FROM {self._q}.comparison WHERE ($1::text IS NULL OR verdict = $1) "
                "AND ($2::text IS NULL OR run_id = $2) ORDER BY detected_at DESC, event_id LIMIT $3 OFFSET $4",
                verdict, run_id, limit, offset,
            )  # fmt: skip

    async def verdict_counts(self, seconds: float) -> dict[str, int]:
        """Comparisons by verdict detected in the last ``seconds``."""
        async with translate_postgres_errors("verdict counts"):
            rows = await self._pool.fetch(
                f"SELECT verdict, count(*) AS n FROM {self._q}.comparison "
                "WHERE detected_at >= now() - make_interval(secs => $1) GROUP BY verdict ORDER BY verdict",
                seconds,
            )
        return {r["verdict"]: int(r["n"]) for r in rows}

    async def comparison(self, event_id: str) -> asyncpg.Record | None:
        """One comparison of the history by its event id."""
        async with translate_postgres_errors("comparison lookup"):
            return await self._pool.fetchrow(f"SELECT * FROM {self._q}.comparison WHERE event_id = $1::uuid", event_id)

    async def report(
        self, run_id: str, *, limit: int | None = None, offset: int = 0
    ) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
        """(step projections of the run, its comparisons in order); with ``limit``, one
        page of each (``offset`` rows in), for the web view."""
        async with translate_postgres_errors("report"):
            steps = await self._pool.fetch(
                f"SELECT run_id, step_id, base_attempt, current_attempt, max_attempt, last_status, last_verdict, "
                f"comparisons FROM {self._q}.step_projection WHERE run_id = $1 ORDER BY step_id LIMIT $2 OFFSET $3",
                run_id, limit, offset,
            )  # fmt: skip
            comps = await self._pool.fetch(
                f"SELECT * FROM {self._q}.comparison WHERE run_id = $1 ORDER BY step_id, detected_at, current_attempt "
                "LIMIT $2 OFFSET $3",
                run_id, limit, offset,
            )  # fmt: skip
        return steps, comps
