"""What ``replaywatch rates`` and the web view read of the rates: each cohort's last
judged window and alert state, the alerts, a cohort's published windows over time, its
most drifting steps and paths, and the comparisons behind an alert. Read-only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from replaywatch.rates.alerts import CohortState
from replaywatch.rates.tally import COUNTERS
from replaywatch.store.errors import translate_postgres_errors


@dataclass(frozen=True)
class CohortRate:
    """A cohort's standing: its alert state and the last window judged."""

    cohort: str
    policy: str
    state: CohortState

    @property
    def last(self) -> dict[str, Any]:
        return self.state.last or {}

    @property
    def significance(self) -> float:
        """The last window's q-value (1 when it was not tested): lower is more significant."""
        q = self.last.get("q_value")
        return 1.0 if q is None else float(q)


@dataclass(frozen=True)
class Point:
    start_ms: int
    width_ms: int
    version: int
    comparisons: int
    drifted: int
    counts: dict[str, int]

    @property
    def rate(self) -> float | None:
        return self.drifted / self.comparisons if self.comparisons else None


def by_significance(rows: list[CohortRate]) -> list[CohortRate]:
    """Open alerts first, then by q-value, then by the rate's excess over its reference."""

    def key(r: CohortRate) -> tuple[int, float, float, str, str]:
        excess = (r.last.get("rate") or 0.0) - (r.last.get("reference_rate") or 0.0)
        return (r.state.status != "open", r.significance, -excess, r.cohort, r.policy)

    return sorted(rows, key=key)


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class RatesHistory:
    def __init__(self, pool: asyncpg.Pool, schema: str, topic: str) -> None:
        self._pool, self._q, self.topic = pool, f'"{schema}"', topic

    async def cohorts(self) -> list[CohortRate]:
        """Every cohort judged, most significant first."""
        async with translate_postgres_errors("load rates"):
            rows = await self._pool.fetch(
                f"SELECT cohort, policy, state::text AS state FROM {self._q}.rate_alert_state WHERE topic = $1",
                self.topic,
            )
        return by_significance([CohortRate(r["cohort"], r["policy"], CohortState.from_json(orjson.loads(r["state"])))
                                for r in rows])  # fmt: skip

    async def alerts(
        self, cohort: str | None = None, *, open_only: bool = False, limit: int = 50
    ) -> list[dict[str, Any]]:
        """Alerts, newest first: each its opening's data, and its resolution's when resolved."""
        async with translate_postgres_errors("load alerts"):
            rows = await self._pool.fetch(
                f"SELECT alert_id::text AS alert_id, cohort, policy, opened_ms, resolved_ms, opened::text AS opened, "
                f"resolved::text AS resolved FROM {self._q}.rate_alert WHERE topic = $1 "
                "AND ($2::text IS NULL OR cohort = $2) AND (NOT $3 OR resolved_ms IS NULL) "
                "ORDER BY opened_ms DESC LIMIT $4", self.topic, cohort, open_only, limit,
            )  # fmt: skip
        return [{**dict(r), "opened": orjson.loads(r["opened"]),
                 "resolved": orjson.loads(r["resolved"]) if r["resolved"] else None} for r in rows]  # fmt: skip

    async def series(self, cohort: str, width_ms: int, limit: int = 288) -> list[Point]:
        """The cohort's published windows of ``width_ms`` (all its policies summed), oldest
        first, the last ``limit``."""
        async with translate_postgres_errors("load a cohort's rates"):
            rows = await self._pool.fetch(
                f"SELECT start_ms, max(version) AS version, array_agg(counts) AS counts FROM {self._q}.rate_published "
                "WHERE topic = $1 AND cohort = $2 AND width_ms = $3 GROUP BY start_ms ORDER BY start_ms DESC LIMIT $4",
                self.topic, cohort, width_ms, limit,
            )  # fmt: skip
        out = []
        for r in reversed(rows):
            total = [sum(c[i] for c in r["counts"]) for i in range(len(COUNTERS))]
            named = dict(zip(COUNTERS, total, strict=True))
            out.append(Point(r["start_ms"], width_ms, r["version"], total[0], total[0] - total[1], named))
        return out

    async def drifting(self, cohort: str, since_ms: int, limit: int = 10) -> tuple[list[tuple[str, int]],
                                                                                   list[tuple[str, int]]]:  # fmt: skip
        """The cohort's steps and paths that drifted most since ``since_ms``: (name, count)."""
        q = self._q
        async with translate_postgres_errors("load a cohort's drift"):
            steps = await self._pool.fetch(
                f"SELECT step_id AS name, count(*) AS n FROM {q}.comparison WHERE cohort = $1 AND occurred_at >= $2 "
                "AND verdict <> 'within_tolerance' GROUP BY step_id ORDER BY n DESC, name LIMIT $3",
                cohort, _at(since_ms), limit,
            )  # fmt: skip
            paths = await self._pool.fetch(
                f"SELECT p AS name, count(*) AS n FROM {q}.comparison, unnest(string_to_array(paths, E'\\n')) AS p "
                "WHERE cohort = $1 AND occurred_at >= $2 AND verdict <> 'within_tolerance' "
                "GROUP BY p ORDER BY n DESC, name LIMIT $3", cohort, _at(since_ms), limit,
            )  # fmt: skip
        return [(r["name"], r["n"]) for r in steps], [(r["name"], r["n"]) for r in paths]

    async def comparisons(self, cohort: str, policy: str | None, from_ms: int, to_ms: int, *, drifted: bool,
                          limit: int = 200) -> list[asyncpg.Record]:  # fmt: skip
        """The cohort's comparisons whose attempts occurred in [from, to): those behind an alert."""
        async with translate_postgres_errors("load a cohort's comparisons"):
            return list(await self._pool.fetch(
                f"SELECT event_id::text AS event_id, run_id, step_id, baseline_attempt, current_attempt, verdict, "
                f"token_delta, diff_sha256, detected_at FROM {self._q}.comparison WHERE cohort = $1 "
                "AND ($2::text IS NULL OR policy = $2) AND occurred_at >= $3 AND occurred_at < $4 "
                "AND (NOT $5 OR verdict <> 'within_tolerance') ORDER BY occurred_at LIMIT $6",
                cohort, policy, _at(from_ms), _at(to_ms), drifted, limit,
            ))  # fmt: skip
