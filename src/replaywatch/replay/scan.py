"""Read a range and apply it in memory, writing nothing: what the dry run of a backfill
and a re-scoring compute. The pure work is ``batch``'s (decode, apply)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from replaywatch.compare import CompareConfig, Comparison
from replaywatch.config import Settings
from replaywatch.core.batch import apply_records, decode_records
from replaywatch.core.projection import StepProjection
from replaywatch.core.types import StepKey
from replaywatch.envelope.adaptive import Adaptive
from replaywatch.replay.ranges import Ranges
from replaywatch.runtime.adapters import open_schema_registry
from replaywatch.runtime.retry import Backoff
from replaywatch.stream.range_consumer import RangeConsumer, reader

StartFrom = Callable[[list[StepKey]], Awaitable[dict[StepKey, StepProjection]]]
"""The projections steps start from: the stored ones (a dry run) or none (a re-scoring)."""
Emitted = list[tuple[Any, int, Comparison]]
Keep = Callable[[Emitted], Awaitable[Emitted]]
"""What of a batch's comparisons is kept (the rest is counted and let go): a range's
comparisons are never all held at once."""


async def keep_all(emitted: Emitted) -> Emitted:
    return emitted


@dataclass
class Scan:
    comparisons: list[tuple[Any, int, Comparison]] = field(default_factory=list)
    """(input record, when its attempt occurred, the comparison it caused), in order:
    those ``keep`` kept"""
    compared: int = 0
    """Comparisons made, kept or not."""
    bad: Counter[str] = field(default_factory=Counter)
    records: int = 0
    positions: dict[int, int] = field(default_factory=dict)
    """Each partition's next offset read so far (progress)."""


async def nothing_stored(keys: list[StepKey]) -> dict[StepKey, StepProjection]:
    return {}


async def scan(settings: Settings, ranges: Ranges, config: CompareConfig, start_from: StartFrom,
               out: Scan | None = None, keep: Keep = keep_all) -> Scan:  # fmt: skip
    """Apply the records of ``ranges`` in order to in-memory projections under ``config``;
    of each batch's comparisons, what ``keep`` returns is kept."""
    out = out or Scan()
    consumer = RangeConsumer(reader(settings), settings.input_topic, ranges)
    limits = settings.limits(config.any_adaptive)
    known: dict[StepKey, StepProjection] = {}
    # adaptive policies: envelopes learned along the range, from none (a range from the
    # beginning meets each comparison with the envelope the live watcher had)
    adaptive = Adaptive({}, settings.envelopes()) if config.any_adaptive else None

    async def assigned(partitions: set[int]) -> None:
        consumer.seek_to_stored({}, partitions)

    async def revoked(partitions: set[int]) -> None:
        return None

    stack = AsyncExitStack()
    retry = Backoff(asyncio.Event())
    schemas, _ = await open_schema_registry(settings, stack, retry, register=False)
    await consumer.start(revoked, assigned)
    try:
        while not consumer.finished():
            batch = consumer.owned(await consumer.poll(settings.batch_timeout_ms, settings.batch_size))
            consumer.advance(batch)
            records = [r for recs in batch.values() for r in recs]
            out.records += len(records)
            writers = None
            if schemas is not None:
                values = [r.value for r in records]
                writers = await retry.call(lambda: schemas.writers(values), "fetch writer schemas")  # noqa: B023
            decoded, rejected = decode_records(records, limits, writers=writers)
            out.bad.update(e.reason for _, e in rejected)
            known.update(await start_from(list({(a.run_id, a.step_id) for _, a in decoded} - known.keys())))
            result = apply_records(decoded, known, config, limits.cpu_seconds, adaptive=adaptive)
            out.bad.update(e.reason for _, e in result.bad)
            known.update({k: proj for k, (_, proj) in result.projections.items()})
            out.compared += len(result.emitted)
            out.comparisons += await keep(result.emitted)
            out.positions.update({tp.partition: recs[-1].offset + 1 for tp, recs in batch.items()})
    finally:
        await consumer.stop()
        await stack.aclose()
    return out
