"""The types the pipeline's stages hand each other, owned by the core: the adapters
import them, never the other way round."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from replaywatch.core.projection import StepProjection
from replaywatch.rates.tally import Counts, RateKey

StepKey = tuple[str, str]
"""A step: (run_id, step_id)."""
Source = tuple[int, int]
"""An input record: (partition, offset)."""


class Partition(Protocol):
    """A topic partition as the consumer names it (the Kafka client's ``TopicPartition``)."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...


class Record(Protocol):
    """An input record as the consumer hands it out (the Kafka client's ``ConsumerRecord``)."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...

    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...

    @property
    def timestamp(self) -> int:
        """The broker's timestamp, ms (0 or less: none)."""
        ...


Batch = Mapping[Partition, Sequence[Record]]
"""What one poll hands out: each partition's records, in offset order."""


@dataclass
class OutboxRow:
    partition: int
    source_offset: int
    event_id: str
    key: bytes | None
    value: bytes
    verdict: str
    trace: str | None = None
    """The W3C traceparent for the event's headers (None: no trace context)."""
    headers: str | None = None
    """More headers of the event, as a JSON object of strings (CloudEvents), or None."""


@dataclass
class ComparisonRow:
    """What ``report`` and the history keep of one comparison."""

    run_id: str
    step_id: str
    baseline_attempt: int
    current_attempt: int
    token_delta: float | None
    cost_delta: float | None
    diff_kind: str | None
    diff_sha256: str | None
    diff_uri: str | None
    detected_at_ms: int
    settings_fingerprint: str | None = None
    origin: str | None = None
    """The first event of the pair (None: this one); set by a re-scoring."""
    supersedes: str | None = None
    """The event this one supersedes (a re-scoring), else None."""
    cohort: str | None = None
    policy: str | None = None
    occurred_at_ms: int | None = None
    paths: str | None = None
    """The paths that made the structure drift, one per line (at most ``MAX_PATHS``)."""


@dataclass
class BatchCommit:
    """Everything one batch writes, in one statement."""

    offsets: dict[int, tuple[int | None, int]] = field(default_factory=dict)
    """partition -> (offset this consumer holds, or None if never stored; next offset)"""
    projections: dict[StepKey, StepProjection] = field(default_factory=dict)
    previous: dict[StepKey, StepProjection] = field(default_factory=dict)
    """The committed projections the batch started from: an attempt that did not change
    is not sent again (its snapshot is the bulk of a row)."""
    outbox: list[OutboxRow] = field(default_factory=list)
    comparisons: list[ComparisonRow] = field(default_factory=list)
    envelopes: dict[tuple[int, str], str] = field(default_factory=dict)
    """The envelopes the batch changed, by (partition, cohort), as JSON, as they stand after it."""
    actions_seen: int | None = None
    """The last operator action on envelopes the batch knew of (None: no adaptive policy)."""
    windows: dict[RateKey, Counts] = field(default_factory=dict)
    """What the batch adds to the rates' base windows."""
    clocks: dict[int, str] = field(default_factory=dict)
    """The rates' clocks of the partitions the batch moved, as JSON, as they stand after it."""

    def queued(self, said: set[str]) -> list[OutboxRow]:
        """The outbox rows the commit queued: those whose ids the history did not hold."""
        return [r for r in self.outbox if r.event_id not in said]

    def only(self, keys: set[StepKey]) -> BatchCommit:
        """This batch reduced to the rows of the steps ``keys`` (offsets kept): what
        ``probe`` tries when PostgreSQL refuses a batch."""
        keep = [i for i, c in enumerate(self.comparisons) if (c.run_id, c.step_id) in keys]
        return BatchCommit(
            offsets=dict(self.offsets),
            projections={k: p for k, p in self.projections.items() if k in keys},
            previous={k: p for k, p in self.previous.items() if k in keys},
            outbox=[self.outbox[i] for i in keep],
            comparisons=[self.comparisons[i] for i in keep],
            envelopes=dict(self.envelopes),
            actions_seen=self.actions_seen,
            windows=self.windows,
            clocks=self.clocks,
        )

    @classmethod
    def merged(cls, commits: list[BatchCommit]) -> BatchCommit:
        """Consecutive batches as one: each partition advances from where the first
        batch found it to where the last left it; the last projection of a step wins,
        and what it is compared with is what was committed before the first batch."""
        if len(commits) == 1:
            return commits[0]
        out = cls()
        for c in commits:
            for partition, (expected, nxt) in c.offsets.items():
                out.offsets[partition] = (out.offsets[partition][0] if partition in out.offsets else expected, nxt)
            for key, proj in c.previous.items():
                if key not in out.projections:  # else an earlier batch wrote it: its "before" stands
                    out.previous.setdefault(key, proj)
            out.projections.update(c.projections)
            out.outbox += c.outbox
            out.comparisons += c.comparisons
            out.envelopes.update(c.envelopes)
            out.clocks.update(c.clocks)
            for window, counts in c.windows.items():
                if window in out.windows:
                    out.windows[window] = [a + b for a, b in zip(out.windows[window], counts, strict=True)]
                else:
                    out.windows[window] = list(counts)
            if c.actions_seen is not None:  # the oldest knowledge binds
                seen = out.actions_seen
                out.actions_seen = c.actions_seen if seen is None else min(seen, c.actions_seen)
        return out
