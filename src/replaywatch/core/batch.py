"""The pure parts of a batch: decode records, apply them to projections, build the
rows that go out. Plain functions over plain data: no IO, no asyncio, no clock (the
detection time is passed in).

Whatever one record raises sets that record aside for the dead-letter topic (reason
``internal``, its stack logged once); the others go on.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from replaywatch import codec
from replaywatch.compare import Attempt, CompareConfig, Comparison, budget
from replaywatch.compare.ids import uuid5_text
from replaywatch.core.projection import StepProjection, apply
from replaywatch.core.types import Batch, ComparisonRow, OutboxRow, Partition, Record, Source, StepKey
from replaywatch.envelope.adaptive import Adaptive
from replaywatch.envelope.cohort import cohort_of
from replaywatch.exceptions import BadRecordError, RecordFailed
from replaywatch.rates.tally import Windows

logger = logging.getLogger(__name__)
MAX_PATHS = 5
"""Deciding paths of a comparison the history keeps (the cohort page's most drifting paths)."""


@dataclass
class BatchResult:
    """The pure outcome of a batch: new projections, comparisons, bad records."""

    projections: dict[StepKey, tuple[int, StepProjection]] = field(default_factory=dict)
    emitted: list[tuple[Record, int, Comparison]] = field(default_factory=list)
    """(input record, when its attempt occurred, the comparison it caused)"""
    bad: list[tuple[Record, BadRecordError]] = field(default_factory=list)
    sources: dict[StepKey, list[Record]] = field(default_factory=dict)
    """The input records of each step: whom to dead-letter when a step's rows are refused."""
    providers: dict[str, str | None] = field(default_factory=dict)
    """The provider of the attempt that caused each comparison, by event id (metrics)."""
    encoded: list[tuple[OutboxRow, ComparisonRow]] = field(default_factory=list)
    """With an ``encode`` function: each emitted comparison's rows, in the same order."""
    envelopes: dict[tuple[int, str], str] = field(default_factory=dict)
    """The envelopes the batch changed (adaptive policies), as JSON, as they stand after it."""


Encode = Callable[[Record, Attempt, Comparison], tuple[OutboxRow, ComparisonRow]]
"""What turns a comparison into its outbox and history rows (``outgoing``, bound to a
batch's settings): given to ``apply_records`` so that a record whose event cannot be
encoded changes nothing."""


def failed(record: Record, doing: str, exc: Exception) -> RecordFailed:
    """An unexpected exception raised by one record: its stack is logged once, and the
    record is dead-lettered (reason ``internal``) instead of stopping the process."""
    logger.error(
        "%s[%d]@%d raised %s while %s; dead-lettering it (please report this)",
        record.topic, record.partition, record.offset, type(exc).__name__, doing, exc_info=exc,
        extra={"partition": record.partition, "offset": record.offset},
    )  # fmt: skip
    return RecordFailed(f"{type(exc).__name__} while {doing}: {exc}")


def decode_records(
    records: Iterable[Record],
    limits: codec.Limits = codec.DEFAULT_LIMITS,
    refused: Mapping[Source, BadRecordError] | None = None,
    writers: Mapping[int, Any] | None = None,
) -> tuple[list[tuple[Record, Attempt]], list[tuple[Record, BadRecordError]]]:
    """(decoded records in order, records that break the contract, in input order). Pure.
    ``refused``: records a service refused earlier, dead-lettered with that reason;
    ``writers``: the writer schemas of a schema registry (``codec.decode_attempt``).
    Both halves at once: ``read_records``, then ``parse_records``."""
    read, bad = read_records(records, limits, refused, writers)
    good = list(parse_records(read, bad, limits))
    in_input_order(bad)
    return good, bad


def in_input_order(bad: list[tuple[Record, BadRecordError]]) -> None:
    """Sort bad records by (partition, offset), in place: dead letters follow the input
    whichever step found them (reading, parsing, comparing)."""
    bad.sort(key=lambda item: (item[0].partition, item[0].offset))


def read_records(
    records: Iterable[Record],
    limits: codec.Limits = codec.DEFAULT_LIMITS,
    refused: Mapping[Source, BadRecordError] | None = None,
    writers: Mapping[int, Any] | None = None,
) -> tuple[list[tuple[Record, dict[str, Any]]], list[tuple[Record, BadRecordError]]]:
    """The first half of ``decode_records``: each record's Avro fields, ids checked, JSON
    still text (``codec.read_attempt``), and the records that break the contract. Pure.
    ``refused`` and ``writers``: as ``decode_records`` takes them."""
    good: list[tuple[Record, dict[str, Any]]] = []
    bad: list[tuple[Record, BadRecordError]] = []
    for record in records:
        if refused and (error := refused.get((record.partition, record.offset))) is not None:
            bad.append((record, error))
            continue
        try:
            good.append((record, codec.read_attempt(record.value, limits, writers)))
        except BadRecordError as exc:
            bad.append((record, exc))
        except Exception as exc:
            bad.append((record, failed(record, "decoding", exc)))
    return good, bad


def parse_records(
    read: Iterable[tuple[Record, dict[str, Any]]], bad: list[tuple[Record, BadRecordError]], limits: codec.Limits
) -> Iterator[tuple[Record, Attempt]]:
    """The second half, one record at a time (``codec.parse_attempt``): a record's
    parsed snapshot lives only while it is compared, so a batch never holds a thousand
    of them at once. Records that break the contract are added to ``bad``. The JSON
    the native path reads stays a ``native.Document`` (``apply_records`` takes either)."""
    for record, rec in read:
        try:
            attempt = codec.parse_attempt(rec, limits, documents=True)
        except BadRecordError as exc:
            bad.append((record, exc))
            continue
        except Exception as exc:
            bad.append((record, failed(record, "decoding", exc)))
            continue
        yield record, attempt


def apply_records(
    decoded: Iterable[tuple[Record, Attempt]],
    known: dict[StepKey, StepProjection],
    config: CompareConfig,
    cpu_seconds: float | None = None,
    encode: Encode | None = None,
    adaptive: Adaptive | None = None,
    windows: Windows | None = None,
) -> BatchResult:
    """Apply decoded attempts in order to the committed projections ``known``. Pure.
    A record whose comparison raises is set aside (bad) and the others go on; so is one
    whose comparison needs more than ``cpu_seconds`` of CPU (``TooCostly``), and, with
    ``encode``, one whose event cannot be encoded: a record changes its step only
    together with what it says. ``adaptive``: the envelopes that judge the comparisons
    of adaptive policies (changed in place, in input order); ``windows``: the rates'
    windows, each comparison counted once its record is through."""
    out = BatchResult()
    work: dict[StepKey, StepProjection] = {}
    for record, attempt in decoded:
        key = (attempt.run_id, attempt.step_id)
        proj = work.get(key) or known.get(key) or StepProjection.empty(*key)
        try:
            judge = None if adaptive is None else adaptive.of((record.partition, record.offset), attempt)
            with budget.limited(cpu_seconds):
                proj, comparisons = apply(proj, attempt, config, judge)
        except BadRecordError as exc:
            out.bad.append((record, exc))
            continue
        except Exception as exc:
            out.bad.append((record, failed(record, "comparing", exc)))
            continue
        if encode is not None:
            try:
                out.encoded += [encode(record, attempt, c) for c in comparisons]
            except Exception as exc:
                out.bad.append((record, failed(record, "encoding its event", exc)))
                continue
        work[key] = proj
        out.projections[key] = (record.partition, proj)
        out.sources.setdefault(key, []).append(record)
        for c in comparisons:
            out.emitted.append((record, attempt.occurred_at_ms, c))
            out.providers[c.event_id] = attempt.provider
            if windows is not None:
                cohort = cohort_of(attempt.provider, attempt.provider_version, attempt.kind, c.policy)
                windows.add(record.partition, attempt.occurred_at_ms, record.timestamp, cohort, c.policy, c)
    return out


def split_by_bytes(batch: Batch, max_bytes: int) -> list[Batch]:
    """Cut a poll into batches of at most ``max_bytes`` of values (at least one record
    each), each partition's records in order."""
    parts: list[dict[Partition, list[Record]]] = [{}]
    size = 0
    for tp, records in batch.items():
        for r in records:
            n = len(r.value or b"")
            if size and size + n > max_bytes:
                parts.append({})
                size = 0
            parts[-1].setdefault(tp, []).append(r)
            size += n
    return [p for p in parts if p]


def outgoing(
    record: Record,
    occurred_at_ms: int,
    c: Comparison,
    *,
    detected_at_ms: int,
    diff_uri: str | None,
    max_event_bytes: int,
    settings_fingerprint: str | None = None,
    supersedes: tuple[str, str | None] | None = None,
    output_schema_id: int | None = None,
    provider: str | None = None,
    public_url: str | None = None,
    cohort: str | None = None,
) -> tuple[OutboxRow, ComparisonRow]:
    """The outbox row of one comparison (its event, cut to fit the output topic) and
    its history row. ``settings_fingerprint``: the settings' (else its policy's).
    ``output_schema_id``: the registry's id of the output schema (a framed event).
    ``public_url``: where ``replaywatch serve`` is reached (the event links its page).
    ``cohort``: the attempt's (the history finds a cohort's comparisons by it).
    ``supersedes``: for a re-scoring's event, (the pair's first event,
    the event it replaces or None); its id is ``superseding_id``."""
    key = c.run_id.encode()
    settings_fingerprint = settings_fingerprint or c.settings_fingerprint
    event_id = c.event_id if supersedes is None else superseding_id(c.event_id, settings_fingerprint or "")
    value = codec.encode_comparison(
        codec.comparison_record(
            c, diff_uri=diff_uri, source=(record.topic, record.partition, record.offset),
            occurred_at_ms=occurred_at_ms, detected_at_ms=detected_at_ms, settings_fingerprint=settings_fingerprint,
            event_id=event_id, supersedes=supersedes[1] if supersedes else None, provider=provider,
            detail_url=f"{public_url.rstrip('/')}/comparisons/{event_id}" if public_url else None,
        ),
        max_bytes=max_event_bytes - len(key), schema_id=output_schema_id,
    )  # fmt: skip
    outbox = OutboxRow(record.partition, record.offset, event_id, key, value, c.verdict.value)
    kind, sha = (c.diff.kind.value, c.diff.sha256) if c.diff else (None, None)
    row = ComparisonRow(c.run_id, c.step_id, c.baseline_attempt, c.current_attempt, c.token_delta, c.cost_delta,
                        kind, sha, diff_uri, detected_at_ms, settings_fingerprint,
                        supersedes[0] if supersedes else None, supersedes[1] if supersedes else None,
                        cohort, c.policy, occurred_at_ms, drifting_paths(c))  # fmt: skip
    return outbox, row


def drifting_paths(c: Comparison) -> str | None:
    """The paths that made the structure drift, one per line, at most ``MAX_PATHS``: those
    that failed their comparator, else the first of the patch (exact equality)."""
    if c.structure_equal:
        return None
    return "\n".join(c.deciding_paths[:MAX_PATHS] or c.changed_paths[:MAX_PATHS]) or None


def superseding_id(event_id: str, settings_fingerprint: str) -> str:
    """The id of the event that re-scores ``event_id`` under other settings: the same
    pair under the same settings always gets the same id, so a re-run says nothing new."""
    return uuid5_text(uuid.UUID(event_id), settings_fingerprint)
