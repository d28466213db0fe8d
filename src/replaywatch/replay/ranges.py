"""Which offsets a replay reads: ``--from``, ``--to`` and ``--partitions``, parsed (pure)
and resolved against the topic (``resolve``).

``--from``: ``beginning``; an offset for every partition (``1200``); offsets per
partition (``0:1200,3:90``: only those partitions, unless ``--partitions`` says more,
which then start at the beginning); or an ISO-8601 time (``2026-11-20T08:00:00Z``; no
zone means UTC), the first offset whose record is at or after it (``offsets_for_times``).

``--to`` (exclusive): ``now`` (the end offsets taken when the replay first starts), an
offset, offsets per partition, or a time (the first offset at or after it). Every end
is capped at the partition's end offset when the replay first starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

from aiokafka import TopicPartition

from replaywatch.exceptions import UsageError

Ranges = dict[int, tuple[int, int]]

_PER_PARTITION = re.compile(r"^\d+:\d+(,\d+:\d+)*$")


@dataclass(frozen=True)
class Position:
    """One end of a range, as the operator gave it."""

    kind: Literal["beginning", "now", "offset", "offsets", "time"]
    offset: int = 0
    offsets: dict[int, int] = field(default_factory=dict)
    time_ms: int = 0


def parse_position(text: str, *, end: bool) -> Position:
    """Parse a ``--from`` (``end`` False) or ``--to`` (``end`` True) value."""
    raw = text.strip()
    what = "--to" if end else "--from"
    if raw == ("now" if end else "beginning"):
        return Position("now" if end else "beginning")
    if raw.isdigit():
        return Position("offset", offset=int(raw))
    if _PER_PARTITION.match(raw):
        pairs = [item.split(":") for item in raw.split(",")]
        offsets = {int(p): int(o) for p, o in pairs}
        if len(offsets) != len(pairs):
            raise UsageError(f"{what} {text!r} names a partition twice")
        return Position("offsets", offsets=offsets)
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        choices = "now" if end else "beginning"
        raise UsageError(
            f"{what} {text!r} is not {choices}, an offset (1200), offsets per partition (0:1200,3:90) "
            "or an ISO-8601 time (2026-11-20T08:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return Position("time", time_ms=int(moment.timestamp() * 1000))


def parse_partitions(text: str | None) -> set[int] | None:
    """``--partitions 0,2,5`` (None: every partition of the topic)."""
    if text is None or not text.strip():
        return None
    try:
        return {int(p) for p in text.split(",") if p.strip()}
    except ValueError:
        raise UsageError(f"--partitions {text!r} must be partition numbers separated by commas (0,2,5)") from None


class OffsetLookup(Protocol):
    """What resolving needs of Kafka (an ``AIOKafkaConsumer`` has it)."""

    async def beginning_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]: ...

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]: ...

    async def offsets_for_times(self, timestamps: dict[TopicPartition, int]) -> dict[TopicPartition, object]: ...


async def resolve(
    kafka: OffsetLookup, topic: str, available: set[int], partitions: set[int] | None, start: Position, end: Position
) -> Ranges:
    """Each partition's [first, end) offsets, within what the topic holds now."""
    chosen = _choose(available, partitions, start, end)
    tps = [TopicPartition(topic, p) for p in sorted(chosen)]
    low = {tp.partition: o for tp, o in (await kafka.beginning_offsets(tps)).items()}
    high = {tp.partition: o for tp, o in (await kafka.end_offsets(tps)).items()}
    firsts = await _offsets(kafka, topic, start, chosen, low, high, default=low)
    ends = await _offsets(kafka, topic, end, chosen, low, high, default=high)
    return {p: (min(max(firsts[p], low[p]), high[p]), min(max(ends[p], low[p]), high[p])) for p in sorted(chosen)}


def _choose(available: set[int], partitions: set[int] | None, start: Position, end: Position) -> set[int]:
    if partitions is not None:
        chosen = set(partitions)
    elif start.kind == "offsets":
        chosen = set(start.offsets)
    else:
        chosen = set(available)
    unknown = chosen - available
    for pos in (start, end):
        if pos.kind == "offsets" and (extra := set(pos.offsets) - available):
            unknown |= extra
    if unknown:
        raise UsageError(f"partitions {sorted(unknown)} do not exist; the topic has partitions {sorted(available)}")
    return chosen


async def _offsets(
    kafka: OffsetLookup,
    topic: str,
    pos: Position,
    chosen: set[int],
    low: dict[int, int],
    high: dict[int, int],
    *,
    default: dict[int, int],
) -> dict[int, int]:
    if pos.kind == "beginning":
        return dict(low)
    if pos.kind == "now":
        return dict(high)
    if pos.kind == "offset":
        return dict.fromkeys(chosen, pos.offset)
    if pos.kind == "offsets":
        return {p: pos.offsets.get(p, default[p]) for p in chosen}
    found = await kafka.offsets_for_times({TopicPartition(topic, p): pos.time_ms for p in chosen})
    # no record at or after the time: the partition's end
    return {tp.partition: high[tp.partition] if meta is None else int(meta.offset) for tp, meta in found.items()}  # type: ignore[attr-defined]
