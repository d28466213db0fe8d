"""PostgreSQL's side of the rates: the leader's lock, the closer's reads and its one
transaction, the rates outbox, and what the views read.

One process of the group is the closer at a time: the one that holds a session
advisory lock on a connection it keeps (``lead``). Its writes go through that
connection: when the connection is lost, so are the lock and any write in flight."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from replaywatch.rates.alerts import CohortState, Transition
from replaywatch.rates.closing import Rate, SeriesKey
from replaywatch.rates.tally import Clock, Counts, RateKey
from replaywatch.store.errors import translate_postgres_errors

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutgoingRecord:
    """A record for the rates or alerts topic, waiting in the rates outbox."""

    seq: int
    destination: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


Window = dict[tuple[str, str], tuple[int, int]]
"""Each cohort's (comparisons, drifted) in an alert window, by (cohort, policy)."""
Outgoing = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]
"""(topic, key, value, headers) of a record the closer sends."""


@dataclass(frozen=True)
class Closing:
    """What one round of the closer writes, in one transaction."""

    rates: list[Rate]
    states: Mapping[tuple[str, str], CohortState]
    transitions: list[Transition]
    outgoing: list[Outgoing]
    """In the order they go out."""
    seq: int
    judged_ms: int | None


class RatesStore:
    def __init__(self, pool: asyncpg.Pool, schema: str, group: str, topic: str) -> None:
        self._pool, self._q, self.group, self.topic = pool, f'"{schema}"', group, topic
        self._lock_key = f"replaywatch-rates-{schema}-{topic}"
        self._conn: Any = None

    # -- leadership ---------------------------------------------------------------

    async def lead(self) -> bool:
        """Whether this process is the closer: takes the lock when free, checks that a
        held one is still held (its connection alive)."""
        async with translate_postgres_errors("take the rates lock"):
            if self._conn is not None:
                try:
                    await self._conn.fetchval("SELECT 1")
                    return True
                except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
                    await self.resign()
                    return False
            conn = await self._pool.acquire()
            try:
                got = await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", self._lock_key)
            except BaseException:
                await self._pool.release(conn)
                raise
            if not got:
                await self._pool.release(conn)
                return False
            self._conn = conn
            logger.info("this process closes the rates' windows of %s", self.topic)
            return True

    async def resign(self) -> None:
        """Give the lock up: unlocked, else its connection closed (the pool's connections
        keep no session state, so none goes back still holding it)."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            unlocked = await conn.fetchval("SELECT pg_advisory_unlock(hashtext($1))", self._lock_key)
        except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError):
            unlocked = False
        if not unlocked:
            conn.terminate()
        await self._pool.release(conn)

    def _leader(self) -> Any:
        assert self._conn is not None, "only the leader closes windows"
        return self._conn

    # -- the closer's reads -------------------------------------------------------

    async def cursor(self) -> tuple[int, int | None]:
        """(the window change sequence closed up to, the last alert window judged)."""
        row = await self._leader().fetchrow(f"SELECT seq, judged_ms FROM {self._q}.rate_cursor WHERE topic = $1",
                                            self.topic)  # fmt: skip
        return (0, None) if row is None else (row["seq"], row["judged_ms"])

    async def clocks(self) -> dict[int, tuple[int, float]]:
        """The live group's partition clocks: (the newest event time each counted, seconds
        since it last counted one), by partition."""
        rows = await self._leader().fetch(
            f"SELECT partition, state::text AS state, extract(epoch FROM now() - updated_at)::float8 AS idle "
            f"FROM {self._q}.rate_clock WHERE group_id = $1 AND topic = $2",
            self.group, self.topic,
        )  # fmt: skip
        return {r["partition"]: (t, r["idle"]) for r in rows
                if (t := Clock.from_json(orjson.loads(r["state"])).newest_ms) is not None}  # fmt: skip

    async def stored_offsets(self) -> dict[int, int]:
        """The live group's committed offsets of the input topic."""
        rows = await self._leader().fetch(
            f"SELECT partition, next_offset FROM {self._q}.consumer_offset WHERE group_id = $1 AND topic = $2",
            self.group, self.topic,
        )  # fmt: skip
        return {r["partition"]: r["next_offset"] for r in rows}

    async def changed(self, since: int) -> list[tuple[RateKey, int]]:
        """The base windows changed after sequence ``since``, with their sequences."""
        rows = await self._leader().fetch(
            f"SELECT cohort, policy, start_ms, seq FROM {self._q}.rate_window WHERE topic = $1 AND seq > $2 "
            "ORDER BY seq LIMIT 20000", self.topic, since,
        )  # fmt: skip
        return [((r["cohort"], r["policy"], r["start_ms"]), r["seq"]) for r in rows]

    async def first_window(self) -> int | None:
        """The oldest base window counted (None: none)."""
        return await self._leader().fetchval(  # type: ignore[no-any-return]
            f"SELECT min(start_ms) FROM {self._q}.rate_window WHERE topic = $1", self.topic
        )

    async def base(self, spans: Iterable[tuple[str, str, int, int]]) -> dict[RateKey, Counts]:
        """The base windows within each (cohort, policy, start, end)."""
        spans = sorted(spans)
        rows = await self._leader().fetch(
            f"SELECT w.cohort, w.policy, w.start_ms, w.counts FROM {self._q}.rate_window w "
            "JOIN unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[]) AS s(c, p, a, b) "
            "ON w.cohort = s.c AND w.policy = s.p AND w.start_ms >= s.a AND w.start_ms < s.b WHERE w.topic = $1",
            self.topic, [s[0] for s in spans], [s[1] for s in spans], [s[2] for s in spans], [s[3] for s in spans],
        )  # fmt: skip
        return {(r["cohort"], r["policy"], r["start_ms"]): list(r["counts"]) for r in rows}

    async def published(self, keys: Iterable[SeriesKey]) -> dict[SeriesKey, tuple[int, tuple[int, ...]]]:
        keys = list(keys)
        rows = await self._leader().fetch(
            f"SELECT p.cohort, p.policy, p.width_ms, p.start_ms, p.version, p.counts FROM {self._q}.rate_published p "
            "JOIN unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[]) AS k(c, o, w, s) "
            "ON p.cohort = k.c AND p.policy = k.o AND p.width_ms = k.w AND p.start_ms = k.s WHERE p.topic = $1",
            self.topic, [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys], [k[3] for k in keys],
        )  # fmt: skip
        return {(r["cohort"], r["policy"], r["width_ms"], r["start_ms"]): (r["version"], tuple(r["counts"]))
                for r in rows}  # fmt: skip

    async def alert_windows(self, start_ms: int, end_ms: int, width_ms: int) -> dict[int, Window]:
        """Each window of ``width_ms`` in [start, end): each cohort's (comparisons, drifted) in it."""
        rows = await self._leader().fetch(
            f"SELECT cohort, policy, start_ms - start_ms % $4 AS w, sum(counts[1])::bigint AS n, "
            f"sum(counts[1] - counts[2])::bigint AS d FROM {self._q}.rate_window "
            "WHERE topic = $1 AND start_ms >= $2 AND start_ms < $3 GROUP BY cohort, policy, w",
            self.topic, start_ms, end_ms, width_ms,
        )  # fmt: skip
        out: dict[int, Window] = {}
        for r in rows:
            if r["n"]:
                out.setdefault(r["w"], {})[(r["cohort"], r["policy"])] = (int(r["n"]), int(r["d"]))
        return out

    async def alert_states(self) -> dict[tuple[str, str], CohortState]:
        rows = await self._leader().fetch(
            f"SELECT cohort, policy, state::text AS state FROM {self._q}.rate_alert_state WHERE topic = $1", self.topic
        )
        return {(r["cohort"], r["policy"]): CohortState.from_json(orjson.loads(r["state"])) for r in rows}

    # -- the closer's write -------------------------------------------------------

    async def save(self, closing: Closing) -> None:
        """The round's rates, alert states, alerts, outgoing records and cursor, at once."""
        conn, q, topic = self._leader(), self._q, self.topic
        async with translate_postgres_errors("close rate windows"), conn.transaction():
            await conn.executemany(
                f"INSERT INTO {q}.rate_published (topic, cohort, policy, width_ms, start_ms, version, counts) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (topic, cohort, policy, width_ms, start_ms) "
                "DO UPDATE SET version = excluded.version, counts = excluded.counts",
                [(topic, r.cohort, r.policy, r.width_ms, r.start_ms, r.version, list(r.counts)) for r in closing.rates],
            )  # fmt: skip
            await conn.executemany(
                f"INSERT INTO {q}.rate_alert_state (topic, cohort, policy, state) VALUES ($1, $2, $3, $4::jsonb) "
                "ON CONFLICT (topic, cohort, policy) DO UPDATE SET state = excluded.state",
                [(topic, c, p, orjson.dumps(s.to_json()).decode()) for (c, p), s in closing.states.items()],
            )  # fmt: skip
            for t in closing.transitions:
                data = orjson.dumps(t.data()).decode()
                if t.kind == "opened":
                    await conn.execute(
                        f"INSERT INTO {q}.rate_alert (alert_id, topic, cohort, policy, opened_ms, opened) "
                        "VALUES ($1, $2, $3, $4, $5, $6::jsonb) ON CONFLICT (alert_id) DO NOTHING",
                        t.alert_id, topic, t.cohort, t.policy, t.start_ms, data,
                    )  # fmt: skip
                else:
                    await conn.execute(
                        f"UPDATE {q}.rate_alert SET resolved_ms = $2, resolved = $3::jsonb WHERE alert_id = $1",
                        t.alert_id, t.start_ms, data,
                    )  # fmt: skip
            await conn.executemany(
                f"INSERT INTO {q}.rate_outbox (topic, destination, key, value, headers) VALUES ($1, $2, $3, $4, $5)",
                [(topic, d, k, v, orjson.dumps({n: h.decode() for n, h in hs}).decode())
                 for d, k, v, hs in closing.outgoing],
            )  # fmt: skip
            await conn.execute(
                f"INSERT INTO {q}.rate_cursor (topic, seq, judged_ms) VALUES ($1, $2, $3) "
                "ON CONFLICT (topic) DO UPDATE SET seq = excluded.seq, judged_ms = excluded.judged_ms",
                topic, closing.seq, closing.judged_ms,
            )  # fmt: skip

    async def outbox(self, start: int, limit: int) -> list[OutgoingRecord]:
        rows = await self._leader().fetch(
            f"SELECT seq, destination, key, value, headers FROM {self._q}.rate_outbox WHERE topic = $1 AND seq >= $2 "
            "ORDER BY seq LIMIT $3", self.topic, start, limit,
        )  # fmt: skip
        return [OutgoingRecord(r["seq"], r["destination"], r["key"], r["value"],
                               [(n, v.encode()) for n, v in orjson.loads(r["headers"] or "{}").items()])
                for r in rows]  # fmt: skip

    async def outbox_delete_before(self, seq: int) -> None:
        await self._leader().execute(f"DELETE FROM {self._q}.rate_outbox WHERE topic = $1 AND seq < $2",
                                     self.topic, seq)  # fmt: skip
