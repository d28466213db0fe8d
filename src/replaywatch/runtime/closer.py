"""The rates' closer: every few seconds, the process that leads (``RatesStore.lead``)
closes the windows the fleet's clock has passed, judges the alert windows that became
final, and publishes what that says.

1. In one PostgreSQL transaction: the rates of the closed windows whose counts changed
   (a new version each time), the alert states, the alerts that opened or resolved,
   and their records in the rates outbox.
2. The outbox to Kafka, in one Kafka transaction per round (a transactional producer,
   ``{group}.rates.{topic}``), with the outbox position committed in that same
   transaction under the group ``{group}.rates``: after a crash the next leader
   deletes what Kafka says was published and sends the rest, so a ``read_committed``
   reader sees each record once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiokafka import TopicPartition

from replaywatch import telemetry
from replaywatch.exceptions import ReplaywatchError
from replaywatch.ports import TransactionalProducer
from replaywatch.rates import closing
from replaywatch.rates.alerts import CohortState, judge
from replaywatch.rates.cloudevents import alert_message
from replaywatch.rates.records import encode_rate, rate_key
from replaywatch.rates.tally import RatesSettings, window_of
from replaywatch.store.rates import Closing, Outgoing, RatesStore
from replaywatch.stream.kafka_errors import translate_kafka_errors

logger = logging.getLogger(__name__)

EVERY = 2.0
"""Seconds between two rounds."""
OUTBOX_BATCH = 1000


@dataclass(kw_only=True)
class Closer:
    store: RatesStore
    settings: RatesSettings
    producer: Callable[[], TransactionalProducer]
    progress: Callable[[], Awaitable[int | None]]
    """Reads the outbox position Kafka holds (None: none)."""
    ends: Callable[[], Awaitable[dict[int, int]]]
    """Reads the input topic's end offsets."""
    rates_topic: str
    alerts_topic: str
    progress_group: str
    source: str
    public_url: str | None = None
    schema_id: int | None = None
    metric_cohorts: int = 50
    _producer: TransactionalProducer | None = field(default=None, init=False)

    async def run(self) -> None:
        while True:
            try:
                await self.round()
            except (ReplaywatchError, OSError) as exc:
                logger.warning("closing rate windows failed (%s); trying again in %.0f s", exc, EVERY)
                await self._step_down()
            await asyncio.sleep(EVERY)

    async def round(self) -> bool:
        """One round; False when another process leads."""
        if not await self.store.lead():
            await self._stop_producer()
            return False
        await self.close()
        await self.publish()
        return True

    async def close(self) -> Closing:
        s, store = self.settings, self.store
        since, judged = await store.cursor()
        ends, stored = await self.ends(), await store.stored_offsets()
        waiting = [p for p, end in ends.items() if end > stored.get(p, 0)]
        clock = closing.fleet_clock(await store.clocks(), waiting, s.idle_ms)
        changed = await store.changed(since)
        spans = closing.spans([k for k, _ in changed], s)
        base = await store.base(spans)
        keys = {k for w in s.widths for k in closing.rollup(base, w)}
        rates = closing.close(base, await store.published(keys), clock, s)
        # the cursor passes a change once every window it touches is closed
        open_seqs = [seq for (c, p, start), seq in changed
                     if clock is None or window_of(start, max(s.widths)) + max(s.widths) > clock]  # fmt: skip
        cursor = (min(open_seqs) - 1) if open_seqs else (changed[-1][1] if changed else since)
        states = await store.alert_states()
        transitions = []
        touched: dict[tuple[str, str], CohortState] = {}
        first = await store.first_window() if judged is None else None  # judging starts at the oldest window
        starts = closing.pending(judged, first, clock, s)
        if starts:
            windows = await store.alert_windows(starts[0], starts[-1] + s.alert_width_ms, s.alert_width_ms)
            for start in starts:
                transitions += judge(states, windows.get(start, {}), start, s)
            judged, touched = starts[-1], states  # every state may have moved (cooling, reference)
        outgoing: list[Outgoing] = [
            (self.rates_topic, rate_key(r.cohort, r.policy), encode_rate(r, self.schema_id), []) for r in rates
        ]
        outgoing += [(self.alerts_topic, *alert_message(t, self.source, self.public_url)) for t in transitions]
        done = Closing(rates, touched, transitions, outgoing, cursor, judged)
        await store.save(done)
        for t in transitions:
            logger.warning("alert %s %s: %s (%s)", t.kind, t.alert_id, f"{t.cohort}#{t.policy}", t.reason)
        if touched:
            telemetry.set_rates(gauges(states, self.metric_cohorts))
        return done

    async def publish(self) -> int:
        """Send the outbox; the records sent."""
        done = await self.progress()
        start = 0 if done is None else done
        await self.store.outbox_delete_before(start)
        sent = 0
        while rows := await self.store.outbox(start, OUTBOX_BATCH):
            producer = await self._started()
            async with translate_kafka_errors("publish rates"), producer.transaction():
                for r in rows:
                    await producer.send(r.destination, r.value, key=r.key, headers=r.headers)
                start = rows[-1].seq + 1
                await producer.send_offsets_to_transaction({TopicPartition(self.rates_topic, 0): start},
                                                           self.progress_group)  # fmt: skip
            await self.store.outbox_delete_before(start)
            sent += len(rows)
        return sent

    async def _started(self) -> TransactionalProducer:
        if self._producer is None:
            producer = self.producer()
            async with translate_kafka_errors("start the rates producer"):
                await producer.start()
            self._producer = producer
        return self._producer

    async def _stop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(Exception):
                await producer.stop()

    async def _step_down(self) -> None:
        await self._stop_producer()
        with contextlib.suppress(Exception):
            await self.store.resign()

    async def stop(self) -> None:
        await self._step_down()


def gauges(states: dict[tuple[str, str], CohortState], most: int) -> list[tuple[str, str, float, float | None, bool]]:
    """(cohort, policy, rate, reference rate, alert open) of the last window judged, for
    the ``most`` cohorts with the most comparisons in it; the others sum into ``(other)``."""
    judged = [(k, st) for k, st in states.items() if st.last and st.last.get("comparisons")]
    judged.sort(key=lambda item: (-(item[1].last or {}).get("comparisons", 0), item[0]))
    out = []
    for (cohort, policy), st in judged[:most]:
        last = st.last or {}
        out.append((cohort, policy, float(last["rate"]), last.get("reference_rate"), st.status == "open"))
    rest = judged[most:]
    if rest:
        n = sum((st.last or {})["comparisons"] for _, st in rest)
        d = sum((st.last or {})["drifted"] for _, st in rest)
        out.append(("(other)", "(other)", d / n, None, any(st.status == "open" for _, st in rest)))
    return out
