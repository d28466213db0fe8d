"""The prepare stage: a batch of input records becomes a ``PreparedBatch``, ready to be
written. Decode, load the projections it starts from, compare, encode the outgoing
events; the diffs go with it to the writer, which uploads them. The pure work is ``batch``'s; this module runs it a
chunk at a time, yielding to the event loop so that the write in flight progresses.

It changes no state until it returns, then stages the batch's projections for the
batches after it (``Projections.stage``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import orjson

from replaywatch import codec, telemetry
from replaywatch.compare import Attempt, CompareConfig, Comparison
from replaywatch.compare.engine import Verdict
from replaywatch.core.batch import (
    BatchResult,
    apply_records,
    failed,
    in_input_order,
    outgoing,
    parse_records,
    read_records,
)
from replaywatch.core.projection import StepProjection
from replaywatch.core.types import Batch, BatchCommit, ComparisonRow, OutboxRow, Record, Source, StepKey
from replaywatch.envelope.adaptive import Adaptive
from replaywatch.envelope.cohort import cohort_of
from replaywatch.envelope.model import EnvelopeSettings
from replaywatch.exceptions import BadRecordError
from replaywatch.ports import DiffStore, SchemaSource
from replaywatch.rates.cloudevents import comparison_headers
from replaywatch.rates.tally import RatesSettings, Windows
from replaywatch.stages.writer import PreparedBatch
from replaywatch.state.clocks import Clocks
from replaywatch.state.envelopes import Envelopes
from replaywatch.state.projections import Projections

T = TypeVar("T")
CHUNK = 200
"""Records prepared between two yields to the event loop: the uploads and the write in
flight progresses while a batch is prepared (preparing 1,000 records takes ~200 ms)."""
SLICE_SECONDS = 0.05
"""Fewer records between two yields when they are costly: a slice ends after the record
that takes it past this long, so the loop is held at most this plus one record (and a
record at most its CPU budget, ``REPLAYWATCH_RECORD_CPU_SECONDS``)."""


def _slice(records: Iterator[T], most: int, until: float, taken: list[int]) -> Iterator[T]:
    """Up to ``most`` items of ``records``, ending early once ``perf_counter`` passes
    ``until`` after an item was consumed: the caller yields to the event loop between
    two slices. ``taken[0]`` counts the items taken so far."""
    for n, item in enumerate(records, 1):
        taken[0] += 1
        yield item
        if n >= most or time.perf_counter() > until:
            return


@dataclass(kw_only=True)
class Preparer:
    projections: Projections
    envelopes: Envelopes
    envelope_settings: EnvelopeSettings
    diffs: DiffStore
    config: CompareConfig
    limits: codec.Limits
    event_bytes: int
    """Largest output event value that fits the output topic."""
    upload: Callable[[int, list[Comparison]], None]
    """Starts putting diffs of the batch being prepared (its sequence number) to S3."""
    set_aside: Mapping[Source, BadRecordError]
    """Records the writer dead-lettered (a service refused them for good): passed by
    when they are read again."""
    topic: str = ""
    group: str = ""
    seq: int = 0
    schemas: SchemaSource | None = None
    """The schema registry: writer schemas of framed records are fetched from it."""
    output_schema_id: int | None = None
    public_url: str | None = None
    """``REPLAYWATCH_PUBLIC_URL``: each event links its comparison's page there."""
    clocks: Clocks | None = None
    rates: RatesSettings | None = None
    """How comparisons are counted in the rates' windows (None: they are not)."""
    cloudevents_source: str | None = None
    """The CloudEvents source of the comparison events (None: no CloudEvents headers)."""

    async def prepare(self, batch: Batch, expected: dict[int, int | None]) -> PreparedBatch:
        """``expected``: each partition's stored offset that the batch advances from."""
        records = [r for recs in batch.values() for r in recs]
        with telemetry.batch_span("prepare", self.topic, self.group, records):
            return await self._prepare(batch, expected, records)

    async def _prepare(self, batch: Batch, expected: dict[int, int | None], records: list[Record]) -> PreparedBatch:
        started = time.perf_counter()
        # 1. read the Avro records (pure), a chunk at a time, with the writer schemas of a
        #    registry (fetched once per id; an outage raises TransientError: the batch
        #    waits, nothing is dead-lettered); their JSON is parsed just before each is compared
        writers = await self.schemas.writers(r.value for r in records) if self.schemas is not None else None
        read: list[tuple[Record, dict[str, Any]]] = []
        bad: list[tuple[Record, BadRecordError]] = []
        for i in range(0, len(records), CHUNK):
            good_part, bad_part = read_records(records[i : i + CHUNK], self.limits, self.set_aside, writers)
            read += good_part
            bad += bad_part
            await asyncio.sleep(0)
        # 2. the projections this batch starts from: pending, cached, else one query
        keys = [(rec["run_id"], rec["step_id"]) for _, rec in read]
        known, unreadable = await self.projections.load(set(keys))
        if unreadable:
            bad += [(r, failed(r, "loading its step", unreadable[k])) for (r, _), k in zip(read, keys, strict=True)
                    if k in unreadable]  # fmt: skip
            read = [item for item, k in zip(read, keys, strict=True) if k not in unreadable]
        # 3. parse, compare and encode (pure) one record at a time, a slice between yields.
        #    A record whose event cannot be encoded is dead-lettered and leaves its step
        #    as it was
        detected_at_ms = int(time.time() * 1000)
        adaptive = None
        if self.config.any_adaptive:  # the envelopes of every cohort of the batch's partitions
            known_envelopes = await self.envelopes.load(tp.partition for tp in batch)
            adaptive = Adaptive(known_envelopes, self.envelope_settings, self.envelopes.actions or ())
        windows = None
        if self.rates is not None and self.clocks is not None:
            windows = Windows(self.rates, await self.clocks.load(tp.partition for tp in batch))
        result = await self._compare(read, known, bad, detected_at_ms, adaptive, windows)
        del read
        # 4. the batch's statement and its outgoing events; each step it writes is written
        #    from the version it was read at, and gets the next one
        for k, (partition, proj) in result.projections.items():
            result.projections[k] = (partition, proj._replace(version=proj.version + 1))
        commit = BatchCommit(
            offsets={tp.partition: (expected[tp.partition], recs[-1].offset + 1) for tp, recs in batch.items()},
            projections={k: p for k, (_, p) in result.projections.items()},
            previous=known,
            envelopes=result.envelopes,
            actions_seen=None if adaptive is None else max((a.id for a in adaptive.actions), default=0),
            windows={} if windows is None else windows.deltas,
            clocks={} if windows is None else {p: orjson.dumps(windows.clocks[p].to_json()).decode()
                                               for p in windows.touched},
        )  # fmt: skip
        for outbox, row in result.encoded:
            commit.outbox.append(outbox)
            commit.comparisons.append(row)
        in_input_order(result.bad)
        # 5. prepared: later batches build on it
        self.seq += 1
        self.projections.stage(self.seq, result.projections)
        size = sum(len(r.value or b"") for r in records)
        telemetry.STAGE_SECONDS.record(time.perf_counter() - started, {"stage": "prepare"})
        diffs = {c.diff.sha256: c for _, _, c in result.emitted if c.diff is not None}
        return PreparedBatch(self.seq, len(records), size, result, commit, list(diffs.values()), started,
                             detected_at_ms)  # fmt: skip

    async def _compare(
        self,
        read: list[tuple[Record, dict[str, Any]]],
        known: dict[StepKey, StepProjection],
        bad: list[tuple[Record, BadRecordError]],
        detected_at_ms: int,
        adaptive: Adaptive | None,
        windows: Windows | None,
    ) -> BatchResult:
        result = BatchResult(bad=bad)
        state = dict(known)
        uploaded: set[str] = set()
        pending = iter(read)
        taken = [0]
        while taken[0] < len(read):
            # a slice: up to CHUNK records, or fewer when they are costly (consumed lazily:
            # the clock is read after each record is compared), then a yield
            part_records = _slice(pending, CHUNK, time.perf_counter() + SLICE_SECONDS, taken)
            parsed = parse_records(part_records, result.bad, self.limits)
            part = apply_records(parsed, state, self.config, self.limits.cpu_seconds,
                                 partial(self._encode, detected_at_ms=detected_at_ms), adaptive, windows)  # fmt: skip
            for k, (partition, proj) in part.projections.items():
                state[k] = proj
                result.projections[k] = (partition, proj)
            for k, recs in part.sources.items():
                result.sources.setdefault(k, []).extend(recs)
            result.emitted += part.emitted
            result.encoded += part.encoded
            result.providers.update(part.providers)
            result.bad += part.bad
            new = {c.diff.sha256: c for _, _, c in part.emitted if c.diff is not None and c.diff.sha256 not in uploaded}
            if new:  # the writer starts putting them now, while the rest is compared
                uploaded.update(new)
                self.upload(self.seq + 1, list(new.values()))
            await asyncio.sleep(0)
        if adaptive is not None:  # as they stand now: the next batch changes them further
            result.envelopes = {k: e.to_json() for k, e in adaptive.changed.items()}
        return result

    def _encode(
        self, record: Record, attempt: Attempt, c: Comparison, *, detected_at_ms: int
    ) -> tuple[OutboxRow, ComparisonRow]:
        """A comparison's outbox row (its event, with its trace context) and history row."""
        uri = self.diffs.uri(c.diff.sha256) if c.diff is not None else None
        outbox, row = outgoing(record, attempt.occurred_at_ms, c, detected_at_ms=detected_at_ms, diff_uri=uri,
                               max_event_bytes=self.event_bytes, output_schema_id=self.output_schema_id,
                               provider=attempt.provider, public_url=self.public_url,
                               cohort=cohort_of(attempt.provider, attempt.provider_version, attempt.kind,
                                                c.policy))  # fmt: skip
        if self.cloudevents_source is not None:
            headers = comparison_headers(outbox.event_id, c.verdict.value, f"{c.run_id}/{c.step_id}", detected_at_ms,
                                         self.cloudevents_source)  # fmt: skip
            outbox.headers = orjson.dumps({k: v.decode() for k, v in headers}).decode()
        outbox.trace = telemetry.comparison_trace(record, c, c.verdict is not Verdict.WITHIN_TOLERANCE)
        return outbox, row
