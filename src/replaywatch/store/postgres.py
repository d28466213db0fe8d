"""PostgreSQL: step projections, the consumer's offsets and the outbox (asyncpg).

The pipeline's commit point. ``commit_batch`` writes one batch in one statement (a
server-side function, so one round trip): offsets advance only from the position this
consumer holds, so a consumer that lost its partitions cannot commit over the new
owner (``Fenced``).

asyncpg's errors are translated here (``translate_postgres_errors``): connection
trouble and contention are ``TransientError``; a refusal of the data (SQLSTATE classes
22, 23, 54: bad values, constraints, limits) is ``RecordRejected``, and the writer
finds the steps whose rows cause it (``probe``); a refusal of replaywatch itself
(authorization, a missing schema or table) is ``ServiceRefused``.

Steps are keyed by ``step_key``, the sha256 of ``run_id NUL step_id``: every id the
contract accepts fits.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from replaywatch.compare import ABSENT, CompareConfig, PreparedAttempt, prepare
from replaywatch.compare.engine import Verdict, stored
from replaywatch.core.projection import StepProjection
from replaywatch.core.types import BatchCommit, OutboxRow, StepKey
from replaywatch.envelope.adaptive import Action
from replaywatch.envelope.model import CohortEnvelope
from replaywatch.exceptions import (
    ConfigError,
)
from replaywatch.rates.tally import Clock
from replaywatch.store.errors import REFUSED_DATA, translate_postgres_errors
from replaywatch.store.history import History
from replaywatch.store.migrations import MIGRATIONS

logger = logging.getLogger(__name__)


def step_key(key: StepKey) -> bytes:
    """The table key of a step: sha256 of its ids joined by NUL (which no id holds)."""
    return hashlib.sha256(key[0].encode() + b"\0" + key[1].encode()).digest()


LOAD_SLICE_SECONDS = 0.05
"""Longest the steps read back are prepared between two yields to the event loop."""
_PRUNABLE = {"comparison": "detected_at", "step_projection": "updated_at", "ignore_rule_stats": "updated_at",
             "rate_window": "start_ms", "rate_published": "start_ms", "rate_alert": "opened_ms"}  # fmt: skip
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """What the pool does to a released connection besides what asyncpg always does
    (roll back an open transaction): nothing. The store keeps no session state (no SET,
    LISTEN, cursors; the rates' closer unlocks its advisory lock, or closes its
    connection, before giving it back: ``RatesStore.resign``), so asyncpg's default reset
    statement (``pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL``), one more
    round trip per query at ~40 releases a second, is skipped."""


def _attempt_json(p: PreparedAttempt | None) -> str | None:
    """``{"attempt", "latency_ms"?, "output_snapshot", "tool_events"?}``, from the JSON
    the attempt holds (the latency before the documents: ``_attempt_parts`` reads it)."""
    if p is None:
        return None
    tools = b"" if p.tools_json is None else b',"tool_events":' + p.tools_json
    latency = b"" if p.latency_ms is None else b',"latency_ms":' + orjson.dumps(p.latency_ms)
    return (b'{"attempt":%d%s,"output_snapshot":%s%s}' % (p.number, latency, p.snapshot_json, tools)).decode()


def changed_attempt(new: PreparedAttempt | None, old: PreparedAttempt | None) -> str | None:
    """An attempt of a step's row as the batch writes it: None when the stored row holds
    it already (the same attempt number), else its JSON (``_attempt_json``)."""
    return None if old is not None and new is not None and old.number == new.number else _attempt_json(new)


_TOOLS_MARK = ',"tool_events":'
_ATTEMPT_HEAD = re.compile(r'\{"attempt":(\d+)(?:,"latency_ms":([-+0-9.eE]+))?,"output_snapshot":')


def _attempt_from(text: str | None, config: CompareConfig | None) -> PreparedAttempt | None:
    """A stored attempt, prepared under ``config`` (None: not prepared, ``engine.stored``)."""
    if text is None:
        return None
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        doc = _attempt_parts(text)  # a snapshot at the contract's 1,024 levels: the row has one more
    parts = (doc["attempt"], doc["output_snapshot"], doc.get("tool_events", ABSENT))
    if config is None:
        return stored(*parts, doc.get("latency_ms"))
    return prepare(*parts, config, doc.get("latency_ms"))


def _pair_from(
    base: str | None, current: str | None, config: CompareConfig
) -> tuple[PreparedAttempt | None, PreparedAttempt | None]:
    """A stored step's (baseline, current), as ``core.projection.apply`` keeps them: one
    attempt prepared once when it is both; under the base first, the current not
    prepared (the next attempt is compared with the baseline)."""
    baseline = _attempt_from(base, config)
    if current == base:
        return baseline, baseline
    return baseline, _attempt_from(current, None if config.base == "first" else config)


def _attempt_parts(text: str) -> dict[str, Any]:
    """A stored attempt read part by part, for a snapshot or tool events at the contract's
    depth limit: the wrapper object adds a level that the parser refuses. The row is the
    text ``_attempt_json`` wrote; the parser itself says where the snapshot ends (the
    position of what follows it), so each part is parsed once."""
    head = _ATTEMPT_HEAD.match(text)
    if head is None or not text.endswith("}"):
        raise ValueError("a stored attempt that is not of the form replaywatch writes")
    body = text[head.end() : -1]
    doc: dict[str, Any] = {"attempt": int(head.group(1))}
    if head.group(2) is not None:
        doc["latency_ms"] = float(head.group(2))
    try:
        doc["output_snapshot"] = orjson.loads(body)
        return doc
    except orjson.JSONDecodeError as exc:
        end = exc.pos
    if not 0 < end < len(body) or not body.startswith(_TOOLS_MARK, end):
        raise ValueError("a stored attempt whose snapshot does not parse")
    doc["output_snapshot"] = orjson.loads(body[:end])
    doc["tool_events"] = orjson.loads(body[end + len(_TOOLS_MARK) :])
    return doc


class PostgresStore:
    def __init__(self, pool: asyncpg.Pool, schema: str, group_id: str, topic: str) -> None:
        self._pool = pool
        self.schema = schema
        self._q = f'"{schema}"'
        self._commit_sql = f"SELECT {self._q}.commit_batch(" + ", ".join(f"${i}" for i in range(1, 54)) + ")"
        self.group_id = group_id
        self.topic = topic

    @classmethod
    async def connect(cls, dsn: str, *, schema: str, group_id: str, topic: str, pool_size: int = 4,
                      read_only: bool = False) -> PostgresStore:  # fmt: skip
        """``read_only``: every transaction of the pool is read-only (PostgreSQL refuses
        any write), for the read-only commands (``serve``)."""
        if not _SCHEMA_NAME.match(schema):
            raise ConfigError(f"postgres schema {schema!r} must be a plain lower-case identifier")
        settings = {"default_transaction_read_only": "on"} if read_only else None
        async with translate_postgres_errors("connect"):
            pool = await asyncpg.create_pool(
                dsn, min_size=1, max_size=pool_size, command_timeout=60, reset=_keep_session, server_settings=settings
            )
        return cls(pool, schema, group_id, topic)

    @property
    def pool(self) -> asyncpg.Pool:
        """The connection pool (the jobs' store shares it)."""
        return self._pool

    async def close(self) -> None:
        await self._pool.close()

    async def migrate(self) -> list[int]:
        """Apply the migrations not yet applied; return their versions. Idempotent."""
        q = self._q
        applied: list[int] = []
        async with translate_postgres_errors("migrate"), self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"replaywatch-migrate-{self.schema}")
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {q}")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS {q}.schema_migrations "
                "(version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r["version"] for r in await conn.fetch(f"SELECT version FROM {q}.schema_migrations")}
            for version, sql in MIGRATIONS:
                if version in done:
                    continue
                await conn.execute(sql.replace("{schema}", q))
                await conn.execute(f"INSERT INTO {q}.schema_migrations (version) VALUES ($1)", version)
                applied.append(version)
        return applied

    async def load_offsets(self, partitions: Iterable[int]) -> dict[int, int]:
        async with translate_postgres_errors("load offsets"):
            rows = await self._pool.fetch(
                f"SELECT partition, next_offset FROM {self._q}.consumer_offset "
                "WHERE group_id = $1 AND topic = $2 AND partition = ANY($3::int[])",
                self.group_id,
                self.topic,
                list(partitions),
            )
        return {r["partition"]: r["next_offset"] for r in rows}

    async def load_projections(
        self, keys: Sequence[StepKey], config: CompareConfig, broken: dict[StepKey, Exception] | None = None
    ) -> dict[StepKey, StepProjection]:
        """The stored projections of ``keys`` (absent: never seen). A row that cannot be
        read back goes into ``broken`` (when given) instead of failing the others."""
        if not keys:
            return {}
        async with translate_postgres_errors("load projections"):
            rows = await self._pool.fetch(
                f"SELECT * FROM {self._q}.step_projection WHERE step_key = ANY($1::bytea[])",
                [step_key(k) for k in keys],
            )
        out: dict[StepKey, StepProjection] = {}
        slice_end = time.perf_counter() + LOAD_SLICE_SECONDS
        for r in rows:
            if time.perf_counter() > slice_end:  # preparing large stored steps is CPU: let the loop run
                await asyncio.sleep(0)
                slice_end = time.perf_counter() + LOAD_SLICE_SECONDS
            key = (r["run_id"], r["step_id"])
            try:
                baseline, current = _pair_from(r["base"], r["current"], config)
                out[key] = StepProjection(
                    run_id=r["run_id"],
                    step_id=r["step_id"],
                    baseline=baseline,
                    current=current,
                    max_attempt=r["max_attempt"],
                    last_status=r["last_status"],
                    last_verdict=Verdict(r["last_verdict"]) if r["last_verdict"] else None,
                    comparisons=r["comparisons"],
                    version=r["version"],
                )
            except Exception as exc:
                if broken is None:
                    raise
                broken[key] = exc
        return out

    async def load_envelopes(self, partitions: Iterable[int]) -> dict[tuple[int, str], CohortEnvelope]:
        """The committed envelopes of every cohort of ``partitions``."""
        return await self.history.envelopes(partitions)

    async def load_rate_clocks(self, partitions: Iterable[int]) -> dict[int, Clock]:
        """The rates' committed clocks of ``partitions`` (those never counted are absent)."""
        async with translate_postgres_errors("load rate clocks"):
            rows = await self._pool.fetch(
                f"SELECT partition, state::text AS state FROM {self._q}.rate_clock "
                "WHERE group_id = $1 AND topic = $2 AND partition = ANY($3::int[])",
                self.group_id, self.topic, list(partitions),
            )  # fmt: skip
        return {r["partition"]: Clock.from_json(orjson.loads(r["state"])) for r in rows}

    async def load_actions(self) -> list[Action]:
        """The operators' actions on this group's envelopes (``replaywatch baseline``)."""
        async with translate_postgres_errors("load envelope actions"):
            rows = await self._pool.fetch(
                f"SELECT id, action, cohort, effective::text AS effective FROM {self._q}.envelope_action "
                "WHERE group_id = $1 AND topic = $2 ORDER BY id",
                self.group_id, self.topic,
            )  # fmt: skip
        return [Action(r["id"], r["action"], r["cohort"], {int(p): o for p, o in orjson.loads(r["effective"]).items()})
                for r in rows]  # fmt: skip

    async def act_on_envelopes(self, action: str, cohort: str, by_user: str | None, reason: str | None) -> Action:
        """Record an operator's action on the cohorts ``cohort`` matches. It applies from
        the offsets committed now, taken under lock: a batch committing meanwhile waits,
        then fails as acted on (``RW003``) and is prepared again with the action."""
        async with (
            translate_postgres_errors("record the envelope action"),
            self._pool.acquire() as conn,
            conn.transaction(),
        ):
            rows = await conn.fetch(
                f"SELECT partition, next_offset FROM {self._q}.consumer_offset "
                "WHERE group_id = $1 AND topic = $2 FOR UPDATE",
                self.group_id, self.topic,
            )  # fmt: skip
            effective = {r["partition"]: r["next_offset"] for r in rows}
            text = orjson.dumps({str(p): o for p, o in effective.items()}).decode()
            action_id = await conn.fetchval(
                f"INSERT INTO {self._q}.envelope_action (group_id, topic, action, cohort, effective, by_user, "
                "reason) VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7) RETURNING id",
                self.group_id, self.topic, action, cohort, text, by_user, reason,
            )  # fmt: skip
        return Action(int(action_id), action, cohort, effective)

    async def commit_batch(self, batch: BatchCommit) -> set[str]:
        """Write the batch in one statement; the ids of its events the history already
        held, which it did not queue. Raises Fenced when a
        partition's stored offset is not the one the batch advances from (the writer
        tells an ambiguous commit, its own reply lost, from another consumer's), and
        StaleProjection when a step changed since it was read."""
        async with translate_postgres_errors("commit"):
            said = await self._pool.fetchval(self._commit_sql, *commit_args(self.group_id, self.topic, batch))
        return {str(u) for u in said or ()}

    async def probe(self, batch: BatchCommit) -> str | None:
        """Try the batch's statement in a transaction that is rolled back: the reason
        PostgreSQL refuses its rows, or None when it takes them."""
        async with translate_postgres_errors("probe"), self._pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            try:
                await conn.execute(self._commit_sql, *commit_args(self.group_id, self.topic, batch))
            except asyncpg.PostgresError as exc:
                if exc.sqlstate in ("RW001", "RW002", "RW003") or exc.sqlstate[:2] not in REFUSED_DATA:
                    raise
                return f"{exc.sqlstate} {exc}"
            finally:
                await tx.rollback()
        return None

    async def outbox_fetch(
        self, partition: int, start: int, end: int, limit: int, max_bytes: int = 16 * 1024 * 1024
    ) -> list[OutboxRow]:
        """Outbox rows of ``partition`` with source offsets in [start, end), in order: at
        most ``limit`` rows, and no more than ``max_bytes`` of event values but for the
        row that crosses it (events reach the output topic's limit, 16 MB at most: a
        read after a restart is bounded in memory whatever their size)."""
        async with translate_postgres_errors("outbox fetch"):
            rows = await self._pool.fetch(
                "SELECT partition, source_offset, event_id, key, value, verdict, trace, headers FROM ("
                "SELECT *, sum(octet_length(value)) OVER (ORDER BY source_offset) AS running FROM ("
                "SELECT partition, source_offset, event_id::text AS event_id, key, value, verdict, trace, headers "
                f"FROM {self._q}.outbox WHERE group_id = $1 AND topic = $2 AND partition = $3 "
                "AND source_offset >= $4 AND source_offset < $5 "
                "ORDER BY source_offset LIMIT $6) AS page) AS sized "
                "WHERE running - octet_length(value) < $7 ORDER BY source_offset",
                self.group_id,
                self.topic,
                partition,
                start,
                end,
                limit,
                max_bytes,
            )
        return [OutboxRow(**dict(r)) for r in rows]

    async def outbox_count(self, partitions: Iterable[int]) -> int:
        """Events in the outbox of these partitions (committed, not yet pruned)."""
        async with translate_postgres_errors("outbox count"):
            n = await self._pool.fetchval(
                f"SELECT count(*) FROM {self._q}.outbox WHERE group_id = $1 AND topic = $2 "
                "AND partition = ANY($3::int[])",
                self.group_id,
                self.topic,
                list(partitions),
            )
        return int(n or 0)

    async def outbox_delete_before(self, partition: int, offset: int) -> None:
        """Every event of ``partition`` below source offset ``offset`` is published: keep
        that as the publisher's position (it never goes back) and delete their rows, in
        one transaction."""
        async with translate_postgres_errors("outbox delete"), self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                f"INSERT INTO {self._q}.publisher_position AS p (group_id, topic, partition, published_upto) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (group_id, topic, partition) DO UPDATE SET "
                "published_upto = greatest(p.published_upto, excluded.published_upto), updated_at = now()",
                self.group_id,
                self.topic,
                partition,
                offset,
            )
            await conn.execute(
                f"DELETE FROM {self._q}.outbox WHERE group_id = $1 AND topic = $2 AND partition = $3 "
                "AND source_offset < $4",
                self.group_id,
                self.topic,
                partition,
                offset,
            )

    async def prune(self, table: str, column: str, older_than_seconds: float, limit: int) -> int:
        """Delete up to ``limit`` rows of ``table`` (one of replaywatch's, named by the
        caller, never by input) whose ``column`` is older than that; the rows deleted.
        An ignore rule's statistics are this group's only."""
        if table not in _PRUNABLE or column != _PRUNABLE[table]:
            raise ValueError(f"{table}.{column} is not a table replaywatch prunes")
        mine = table == "ignore_rule_stats"
        before = ("(extract(epoch FROM now()) * 1000 - $1::float8 * 1000)::bigint" if column.endswith("_ms")  # epoch ms
                  else "now() - make_interval(secs => $1)")  # fmt: skip
        async with translate_postgres_errors(f"prune {table}"):
            status = await self._pool.execute(
                f"DELETE FROM {self._q}.{table} WHERE ctid IN (SELECT ctid FROM {self._q}.{table} "
                f"WHERE {column} < {before}{' AND group_id = $3' if mine else ''} LIMIT $2)",
                older_than_seconds, limit, *((self.group_id,) if mine else ()),
            )  # fmt: skip
        return int(status.rsplit(" ", 1)[-1])

    async def grant_read(self, role: str) -> None:
        """Let ``role`` (an existing one) read this schema, its tables now and later, and
        nothing else: the role of ``replaywatch serve``."""
        if not _SCHEMA_NAME.match(role):
            raise ConfigError(f"role {role!r} must be a plain lower-case identifier")
        async with translate_postgres_errors(f"grant read access to {role}"), self._pool.acquire() as conn:
            await conn.execute(
                f'GRANT USAGE ON SCHEMA {self._q} TO "{role}"; '
                f'GRANT SELECT ON ALL TABLES IN SCHEMA {self._q} TO "{role}"; '
                f'ALTER DEFAULT PRIVILEGES IN SCHEMA {self._q} GRANT SELECT ON TABLES TO "{role}"'
            )

    async def publisher_position(self, partition: int) -> int | None:
        """The publisher's position of ``partition`` kept in PostgreSQL (None: none yet)."""
        async with translate_postgres_errors("read the publisher's position"):
            got = await self._pool.fetchval(
                f"SELECT published_upto FROM {self._q}.publisher_position "
                "WHERE group_id = $1 AND topic = $2 AND partition = $3",
                self.group_id,
                self.topic,
                partition,
            )
        return None if got is None else int(got)

    async def add_rule_counts(self, rows: list[tuple[str, str, int, int]]) -> None:
        """Add (policy, rule, comparisons, matches) to the ignore-rule statistics."""
        if not rows:
            return
        async with translate_postgres_errors("ignore rule statistics"):
            await self._pool.execute(
                f"INSERT INTO {self._q}.ignore_rule_stats AS s (group_id, policy, rule, comparisons, matches) "
                "SELECT $1, p, r, c, m FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[]) "
                "AS t(p, r, c, m) ON CONFLICT (group_id, policy, rule) DO UPDATE SET "
                "comparisons = s.comparisons + excluded.comparisons, matches = s.matches + excluded.matches, "
                "updated_at = now()",
                self.group_id, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows],
            )  # fmt: skip

    @property
    def history(self) -> History:
        """What the views read: the comparisons, the steps of a run, the rule counts."""
        return History(self._pool, self.schema, self.group_id, self.topic)


def commit_args(group_id: str, topic: str, batch: BatchCommit) -> list[Any]:
    """The arguments of ``commit_batch``, column by column (the function unnests them)."""
    offs = sorted(batch.offsets.items())
    projs = list(batch.projections.values())
    before = [batch.previous.get((p.run_id, p.step_id)) for p in projs]

    outbox = batch.outbox
    comps = batch.comparisons
    windows = sorted(batch.windows)
    return [
        group_id,
        topic,
        [p for p, _ in offs],
        [o[0] for _, o in offs],
        [o[1] for _, o in offs],
        [step_key((p.run_id, p.step_id)) for p in projs],
        [p.run_id for p in projs],
        [p.step_id for p in projs],
        [p.baseline.number if p.baseline else None for p in projs],
        [p.current.number if p.current else None for p in projs],
        [p.max_attempt for p in projs],
        [p.last_status for p in projs],
        [p.last_verdict.value if p.last_verdict else None for p in projs],
        [p.comparisons for p in projs],
        [changed_attempt(p.baseline, b.baseline if b else None) for p, b in zip(projs, before, strict=True)],
        [changed_attempt(p.current, b.current if b else None) for p, b in zip(projs, before, strict=True)],
        [b.version if b else 0 for b in before],
        [p.version for p in projs],
        [o.partition for o in outbox],
        [o.source_offset for o in outbox],
        [o.event_id for o in outbox],
        [o.key for o in outbox],
        [o.value for o in outbox],
        [o.verdict for o in outbox],
        [o.trace for o in outbox],
        [c.run_id for c in comps],
        [c.step_id for c in comps],
        [c.baseline_attempt for c in comps],
        [c.current_attempt for c in comps],
        [c.token_delta for c in comps],
        [c.cost_delta for c in comps],
        [c.diff_kind for c in comps],
        [c.diff_sha256 for c in comps],
        [c.diff_uri for c in comps],
        [datetime.fromtimestamp(c.detected_at_ms / 1000, UTC) for c in comps],
        [c.origin for c in comps],
        [c.supersedes for c in comps],
        [c.settings_fingerprint for c in comps],
        [p for p, _ in batch.envelopes],
        [c for _, c in batch.envelopes],
        list(batch.envelopes.values()),
        batch.actions_seen,
        [o.headers for o in outbox],
        [c.cohort for c in comps],
        [c.policy for c in comps],
        [None if c.occurred_at_ms is None else datetime.fromtimestamp(c.occurred_at_ms / 1000, UTC) for c in comps],
        [c.paths for c in comps],
        [k[0] for k in windows],
        [k[1] for k in windows],
        [k[2] for k in windows],
        ["{" + ",".join(map(str, batch.windows[k])) + "}" for k in windows],
        sorted(batch.clocks),
        [batch.clocks[p] for p in sorted(batch.clocks)],
    ]
