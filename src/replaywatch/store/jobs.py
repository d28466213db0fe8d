"""PostgreSQL for replays: the jobs (what range each reads, whether it finished), the
history of what was published, and the atomic swap of a rebuilt projection table.

A job's checkpoint is not here: it is the job's own ``consumer_offset`` rows, written
by the same statement as its projections and events (``commit_batch``).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from replaywatch.store.errors import translate_postgres_errors

Ranges = dict[int, tuple[int, int]]

CHUNK = 5000
"""Event ids per history query."""


@dataclass(frozen=True)
class Job:
    job_id: str
    kind: str
    spec: dict[str, Any]
    ranges: Ranges
    resumed: bool


@dataclass(frozen=True)
class Outcome:
    """What was last published for a comparison pair."""

    event_id: str
    verdict: str


class JobStore:
    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self._pool = pool
        self._q = f'"{schema}"'

    async def start(self, kind: str, spec_hash: str, spec: dict[str, Any], ranges: Ranges) -> Job:
        """The unfinished job of this spec (a rerun resumes it, with its ranges as first
        taken), else a new one with ``ranges``."""
        async with translate_postgres_errors("start a replay job"), self._pool.acquire() as conn:
            row = await conn.fetchrow(
                f"SELECT job_id, spec, ranges FROM {self._q}.replay_job "
                "WHERE kind = $1 AND spec_hash = $2 AND state = 'running' ORDER BY created_at DESC LIMIT 1",
                kind,
                spec_hash,
            )
            if row is not None:
                stored = orjson.loads(row["ranges"])
                return Job(row["job_id"], kind, orjson.loads(row["spec"]), _ranges(stored), resumed=True)
            job_id = f"{kind}-{spec_hash[:10]}-{secrets.token_hex(3)}"
            await conn.execute(
                f"INSERT INTO {self._q}.replay_job (job_id, kind, spec_hash, spec, ranges) "
                "VALUES ($1, $2, $3, $4::jsonb, $5::jsonb)",
                job_id,
                kind,
                spec_hash,
                orjson.dumps(spec).decode(),
                orjson.dumps({str(p): list(r) for p, r in ranges.items()}).decode(),
            )
        return Job(job_id, kind, spec, dict(ranges), resumed=False)

    async def finish(self, job_id: str, group_id: str, summary: dict[str, Any], state: str = "done") -> None:
        """The job is done (or, ``state``, abandoned once its outbox was published): its
        summary is kept, its outbox rows (all published) go."""
        async with (
            translate_postgres_errors("finish a replay job"),
            self._pool.acquire() as conn,
            conn.transaction(),
        ):
            await conn.execute(
                f"UPDATE {self._q}.replay_job SET state = $3, summary = $2::jsonb, finished_at = now() "
                "WHERE job_id = $1",
                job_id,
                orjson.dumps(summary).decode(),
                state,
            )
            await conn.execute(f"DELETE FROM {self._q}.outbox WHERE group_id = $1", group_id)

    async def unfinished(self, group_prefix: str) -> list[dict[str, Any]]:
        """The jobs still running (or interrupted and never resumed), oldest first, each
        with the events it committed and has not published (its outbox)."""
        async with translate_postgres_errors("list replay jobs"):
            rows = await self._pool.fetch(
                f"SELECT j.job_id, j.kind, j.spec, j.ranges, j.created_at, "
                f"(SELECT count(*) FROM {self._q}.outbox o WHERE o.group_id = $1 || '.' || j.job_id) AS unpublished "
                f"FROM {self._q}.replay_job j WHERE j.state = 'running' ORDER BY j.created_at",
                group_prefix,
            )
        return [
            {"job": r["job_id"], "kind": r["kind"], "created_at": r["created_at"].isoformat(),
             "ranges": orjson.loads(r["ranges"]), "output_topic": orjson.loads(r["spec"]).get("output_topic"),
             "unpublished": int(r["unpublished"])}
            for r in rows
        ]  # fmt: skip

    async def get(self, job_id: str) -> Job | None:
        """A running job by its id (None: no such job, or it ended)."""
        async with translate_postgres_errors("read a replay job"):
            row = await self._pool.fetchrow(
                f"SELECT job_id, kind, spec, ranges FROM {self._q}.replay_job WHERE job_id = $1 AND state = 'running'",
                job_id,
            )
        if row is None:
            return None
        return Job(row["job_id"], row["kind"], orjson.loads(row["spec"]), _ranges(orjson.loads(row["ranges"])), True)

    async def published(self, event_ids: Iterable[str]) -> set[str]:
        """The ids of ``event_ids`` the history holds (made and published, or queued)."""
        ids = list(event_ids)
        found: set[str] = set()
        async with translate_postgres_errors("read the history"):
            for i in range(0, len(ids), CHUNK):
                rows = await self._pool.fetch(
                    f"SELECT event_id::text AS id FROM {self._q}.comparison WHERE event_id = ANY($1::uuid[])",
                    ids[i : i + CHUNK],
                )
                found.update(r["id"] for r in rows)
        return found

    async def outcomes(self, origins: Iterable[str]) -> dict[str, Outcome]:
        """The last event published for each pair (by its first event's id)."""
        ids = list(origins)
        out: dict[str, Outcome] = {}
        async with translate_postgres_errors("read the history"):
            for i in range(0, len(ids), CHUNK):
                rows = await self._pool.fetch(
                    f"SELECT DISTINCT ON (origin) origin::text AS origin, event_id::text AS id, verdict "
                    f"FROM {self._q}.comparison WHERE origin = ANY($1::uuid[]) ORDER BY origin, seq DESC",
                    ids[i : i + CHUNK],
                )
                out.update({r["origin"]: Outcome(r["id"], r["verdict"]) for r in rows})
        return out


def _ranges(stored: dict[str, list[int]]) -> Ranges:
    return {int(p): (int(r[0]), int(r[1])) for p, r in stored.items()}
