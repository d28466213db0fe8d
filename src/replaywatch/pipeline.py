"""The streaming pipeline, wired in one place. Per batch, in two stages:

    prepare: poll -> decode -> load projections -> compare -> encode events   (CPU)
    write:   store diffs -> dead letters -> one PostgreSQL statement
             (projections, outbox, offsets) -> wake the publisher             (IO)

The stages overlap: while batch N is written, batch N+1 is prepared on top of N's
projections, which stay in memory (``_pending``) until N's statement commits. Writes
happen one batch at a time, in order, so the offsets each one advances from are the
ones the previous one committed. If a write is fenced, the batch prepared on top of
it is thrown away and every partition resumes from PostgreSQL.

PostgreSQL is the commit point: the batch's projections, its outgoing events (the
outbox) and each partition's next offset are written together, or not at all. On
assignment the consumer seeks to the offsets stored there; the outbox publisher
(``stream.publisher``) moves events to the output topic in Kafka transactions. A record
that breaks the contract is dead-lettered before its offset is committed, so every
input offset is either processed or dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError, for_code

from replaywatch import codec, telemetry
from replaywatch.compare import Attempt, CompareConfig, Comparison
from replaywatch.config import Settings
from replaywatch.exceptions import (
    BadRecordError,
    ConfigError,
    Fenced,
    RecordFailed,
    RecordRejected,
    TransientError,
)
from replaywatch.projection import StepProjection, apply
from replaywatch.store.artifacts import S3Artifacts
from replaywatch.store.postgres import BatchCommit, ComparisonRow, OutboxRow, PostgresStore, StepKey
from replaywatch.stream.deadletter import DeadLetters
from replaywatch.stream.kafka_errors import translate_kafka_errors
from replaywatch.stream.publisher import RECORD_OVERHEAD, OutboxPublisher

logger = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
UNWRITTEN_RECORDS = 4000
"""Records prepared and not yet committed before the consumer waits: records keep being
decoded and compared (and their diffs uploaded) while earlier batches commit. The
bytes of those records are bounded too (REPLAYWATCH_INFLIGHT_MB)."""
KAFKA_COMMIT_EVERY = 1.0
"""Seconds between two commits of the group's offsets to Kafka (advisory: for lag tools)."""
GROUP_RECORDS = 5000
"""At most this many records commit in one statement."""
CHUNK = 200
"""Records prepared between two yields to the event loop: the uploads and the write in
flight progress while a batch is prepared (preparing 1,000 records takes ~200 ms)."""


def _weight(proj: StepProjection) -> int:
    """Roughly the bytes of memory a projection holds: the JSON bytes of its two
    attempts, and a few hundred bytes of tuples and small values."""
    n = 300
    for p in (proj.base, proj.current):
        if p is not None:
            n += 400 + len(p.snapshot_json) + len(p.structure_fp)
            if p.tool_fp is not None:
                n += len(p.tool_fp) + (0 if p.tools_json is p.tool_fp else len(p.tools_json or b""))
    return n


class StepCache:
    """Committed step projections of the partitions this consumer owns: an LRU bounded
    by count and by bytes, so a few huge snapshots cannot grow memory without bound."""

    def __init__(self, capacity: int, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[StepKey, tuple[int, StepProjection, int]] = OrderedDict()

    def get(self, key: StepKey) -> StepProjection | None:
        hit = self._items.get(key)
        if hit is None:
            return None
        self._items.move_to_end(key)
        return hit[1]

    def put(self, key: StepKey, partition: int, proj: StepProjection) -> None:
        if self.capacity <= 0:
            return
        self._remove(key)
        weight = _weight(proj)
        self._items[key] = (partition, proj, weight)
        self.bytes += weight
        while self._items and (len(self._items) > self.capacity or self.bytes > self.max_bytes):
            _, (_, _, w) = self._items.popitem(last=False)
            self.bytes -= w

    def _remove(self, key: StepKey) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= old[2]

    def drop_partitions(self, partitions: set[int]) -> None:
        for key in [k for k, (p, _, _) in self._items.items() if p in partitions]:
            self._remove(key)

    def __len__(self) -> int:
        return len(self._items)


Source = tuple[int, int]
"""An input record's (partition, offset)."""


@dataclass
class BatchResult:
    """The pure outcome of a batch: new projections, comparisons, bad records."""

    projections: dict[StepKey, tuple[int, StepProjection]] = field(default_factory=dict)
    emitted: list[tuple[Any, int, Comparison]] = field(default_factory=list)
    """(input record, when its attempt occurred, the comparison it caused)"""
    bad: list[tuple[Any, BadRecordError]] = field(default_factory=list)
    sources: dict[StepKey, list[Any]] = field(default_factory=dict)
    """The input records of each step: whom to dead-letter when a step's rows are refused."""


def failed(record: Any, doing: str, exc: Exception) -> RecordFailed:
    """An unexpected exception raised by one record: its stack is logged once, and the
    record is dead-lettered (reason ``internal``) instead of stopping the process."""
    logger.error(
        "%s[%d]@%d raised %s while %s; dead-lettering it (please report this)",
        record.topic, record.partition, record.offset, type(exc).__name__, doing, exc_info=exc,
    )  # fmt: skip
    return RecordFailed(f"{type(exc).__name__} while {doing}: {exc}")


def decode_records(
    records: Iterable[Any],
    limits: codec.Limits = codec.DEFAULT_LIMITS,
    refused: dict[Source, BadRecordError] | None = None,
) -> tuple[list[tuple[Any, Attempt]], list[tuple[Any, BadRecordError]]]:
    """(decoded records in order, records that break the contract). Pure. ``refused``:
    records a service refused earlier, dead-lettered with that reason."""
    good: list[tuple[Any, Attempt]] = []
    bad: list[tuple[Any, BadRecordError]] = []
    for record in records:
        if refused and (error := refused.get((record.partition, record.offset))) is not None:
            bad.append((record, error))
            continue
        try:
            good.append((record, codec.decode_attempt(record.value, limits)))
        except BadRecordError as exc:
            bad.append((record, exc))
        except Exception as exc:
            bad.append((record, failed(record, "decoding", exc)))
    return good, bad


def apply_records(
    decoded: Iterable[tuple[Any, Attempt]], known: dict[StepKey, StepProjection], config: CompareConfig
) -> BatchResult:
    """Apply decoded attempts in order to the committed projections ``known``. Pure.
    A record whose comparison raises is set aside (bad) and the others go on."""
    out = BatchResult()
    work: dict[StepKey, StepProjection] = {}
    for record, attempt in decoded:
        key = (attempt.run_id, attempt.step_id)
        proj = work.get(key) or known.get(key) or StepProjection.empty(*key)
        try:
            proj, comparisons = apply(proj, attempt, config)
        except BadRecordError as exc:
            out.bad.append((record, exc))
            continue
        except Exception as exc:
            out.bad.append((record, failed(record, "comparing", exc)))
            continue
        work[key] = proj
        out.projections[key] = (record.partition, proj)
        out.sources.setdefault(key, []).append(record)
        for c in comparisons:
            out.emitted.append((record, attempt.occurred_at_ms, c))
    return out


def split_by_bytes(batch: dict[TopicPartition, list[Any]], max_bytes: int) -> list[dict[TopicPartition, list[Any]]]:
    """Cut a poll into batches of at most ``max_bytes`` of values (at least one record
    each), each partition's records in order."""
    parts: list[dict[TopicPartition, list[Any]]] = [{}]
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


class _GaveUp(Exception):
    """A batch's write was abandoned to stop (its cause: the last transient error)."""


class _Void(Exception):
    """A batch was not written because a batch before it was not committed."""


class _Rewind(Exception):
    """A service refused what some records make, for good: those records are
    dead-lettered when read again, and everything from this write on is re-read."""

    def __init__(self, refused: dict[Source, BadRecordError]) -> None:
        super().__init__(f"{len(refused)} records refused")
        self.refused = refused


class _DiffsRefused(Exception):
    def __init__(self, refused: dict[str, RecordRejected]) -> None:
        super().__init__(f"S3 refused {len(refused)} diffs")
        self.refused = refused


@dataclass
class _Prepared:
    """A batch prepared and not yet written."""

    seq: int
    records: int
    size: int
    """Bytes of the input values."""
    result: BatchResult
    commit: BatchCommit
    diffs: list[Comparison]
    uploads: list[asyncio.Task[None]]
    """The diffs' uploads, started while the batch was prepared."""
    started: float


@dataclass
class _Write:
    """One statement in flight: the batches it commits. Batches join it until it starts."""

    batches: list[_Prepared]
    task: asyncio.Task[None] | None = None
    started: bool = False

    @property
    def records(self) -> int:
        return sum(b.records for b in self.batches)

    @property
    def size(self) -> int:
        return sum(b.size for b in self.batches)


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, pipeline: Pipeline) -> None:
        self._pipeline = pipeline

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        topic = self._pipeline.settings.input_topic
        await self._pipeline.revoked({tp.partition for tp in revoked if tp.topic == topic})

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        topic = self._pipeline.settings.input_topic
        await self._pipeline.assigned({tp.partition for tp in assigned if tp.topic == topic})


class Pipeline:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.config = settings.compare_config()
        self.limits = settings.limits()
        self.cache = StepCache(settings.cache_steps, settings.cache_mb * 1024 * 1024)
        self._lock = asyncio.Lock()
        self._positions: dict[int, int | None] = {}
        self._origins: dict[int, int] = {}
        """Where a partition with no stored offset was first read from since it was
        assigned: a reload of it goes back there (there is no stored offset to seek to)."""
        self._consumer: AIOKafkaConsumer
        self._store: PostgresStore
        self._artifacts: S3Artifacts
        self._dlq: DeadLetters
        self._publisher: OutboxPublisher
        self._event_bytes = 1024 * 1024 - RECORD_OVERHEAD
        """Largest output event value that fits the output topic (read at start)."""
        self.processed = 0
        self.ready = asyncio.Event()
        self._assignment_done = asyncio.Event()
        self._kafka_offsets: dict[TopicPartition, int] = {}
        self._kafka_committed_at = 0.0
        self._kafka_commit: asyncio.Task[None] | None = None
        self._writes: deque[_Write] = deque()
        """Writes in flight, oldest first; each waits for the one before it."""
        self._pending: dict[StepKey, tuple[int, StepProjection]] = {}
        """Projections of prepared batches not committed yet: key -> (batch seq, projection)."""
        self._refused: dict[Source, BadRecordError] = {}
        """Records a service refused for good: dead-lettered when they are read again."""
        self._dead_lettered: set[Source] = set()
        """Records the dead-letter topic has acknowledged and whose offsets are not committed
        yet: a retried or re-read write does not send them again."""
        self._seq = 0
        self._stop = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        settings = self.settings
        self._stop = stop
        async with AsyncExitStack() as stack:
            self._store = await _retry(
                lambda: PostgresStore.connect(
                    settings.postgres_dsn.get_secret_value(),
                    schema=settings.postgres_schema,
                    group_id=settings.group_id,
                    topic=settings.input_topic,
                ),
                "connect to PostgreSQL",
                stop,
            )
            stack.push_async_callback(self._store.close)
            await _retry(self._store.migrate, "migrate PostgreSQL", stop)
            self._artifacts = await stack.enter_async_context(
                S3Artifacts.open(
                    bucket=settings.s3_bucket,
                    endpoint=settings.s3_endpoint,
                    region=settings.s3_region,
                    access_key_id=settings.s3_access_key_id.get_secret_value() if settings.s3_access_key_id else None,
                    secret_access_key=(
                        settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
                    ),
                    concurrency=settings.s3_concurrency,
                )
            )
            admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
            async with translate_kafka_errors("connect admin"):
                await admin.start()
            stack.push_async_callback(admin.close)
            await ensure_topics(admin, settings)
            output_limit = await max_message_bytes(admin, settings.output_topic)
            self._event_bytes = output_limit - RECORD_OVERHEAD

            producer = AIOKafkaProducer(
                bootstrap_servers=settings.kafka_bootstrap,
                enable_idempotence=True,
                acks="all",
                max_request_size=MAX_MESSAGE_BYTES,
            )
            async with translate_kafka_errors("start dead-letter producer"):
                await producer.start()
            stack.push_async_callback(lambda: asyncio.shield(producer.stop()))
            self._dlq = DeadLetters(producer, settings.dlq_topic)

            self._publisher = OutboxPublisher(
                store=self._store,
                admin=admin,
                producer_config={"bootstrap_servers": settings.kafka_bootstrap},
                input_topic=settings.input_topic,
                output_topic=settings.output_topic,
                dlq_topic=settings.dlq_topic,
                group_id=settings.group_id,
                progress_group=settings.publisher_group,
                max_message_bytes=output_limit,
                queue_bytes=settings.publisher_queue_mb * 1024 * 1024,
            )
            stack.push_async_callback(self._publisher.close)

            self._consumer = AIOKafkaConsumer(
                bootstrap_servers=settings.kafka_bootstrap,
                group_id=settings.group_id,
                group_instance_id=settings.instance_id,
                enable_auto_commit=False,
                auto_offset_reset=settings.auto_offset_reset,
                isolation_level="read_committed",
                max_poll_interval_ms=600_000,
                session_timeout_ms=10_000,
                heartbeat_interval_ms=2_000,
                fetch_max_bytes=64 * 1024 * 1024,
                fetch_min_bytes=settings.fetch_min_bytes,
                fetch_max_wait_ms=settings.fetch_max_wait_ms,
                max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
            )
            async with translate_kafka_errors("start consumer"):
                await self._consumer.start()
            stack.push_async_callback(lambda: asyncio.shield(self._consumer.stop()))
            self._consumer.subscribe([settings.input_topic], listener=_Listener(self))
            logger.info(
                "replaywatch consuming %s as group %s%s", settings.input_topic, settings.group_id,
                f" (static member {settings.instance_id})" if settings.instance_id else "",
            )  # fmt: skip
            _tune_gc()
            self.ready.set()

            while not stop.is_set():
                batch = await self._poll()
                self._publisher.raise_failure()
                if batch:
                    for part in split_by_bytes(batch, settings.batch_max_mb * 1024 * 1024):
                        await self.process_batch(part)
                elif self._writes and self._done(self._writes[0]):
                    async with self._lock:
                        await self._settle(UNWRITTEN_RECORDS)
            # Shutdown: finish the write in flight, publish what is committed, then leave.
            async with self._lock:
                await asyncio.shield(self._settle(0))
            await asyncio.shield(self._flush_kafka_commits())
            drained = await asyncio.shield(self._publisher.flush(settings.shutdown_seconds / 2))
            logger.info(
                "replaywatch stopping: %d records processed, outbox %s",
                self.processed,
                "drained" if drained else "left for the next owner",
            )

    async def _poll(self) -> dict[TopicPartition, list[Any]]:
        """One poll. Errors the group coordinator reports come out here: a refusal stops
        the process; anything else is logged and the poll is tried again."""
        try:
            async with translate_kafka_errors("consume"):
                batch: dict[TopicPartition, list[Any]] = await self._consumer.getmany(
                    timeout_ms=self.settings.batch_timeout_ms, max_records=self.settings.batch_size
                )
                return batch
        except TransientError as exc:
            logger.warning("%s; polling again", exc)
            await asyncio.sleep(0.5)
            return {}

    @property
    def owned_partitions(self) -> set[int]:
        return set(self._positions) if self._assignment_done.is_set() else set()

    # -- rebalance ---------------------------------------------------------------------------------------------

    async def revoked(self, partitions: set[int]) -> None:
        """Let the batch in flight finish (the lock), then forget these partitions."""
        self._assignment_done.clear()
        async with self._lock:
            await self._settle(0)  # their commits land (or are fenced) before the partitions go
            await self._flush_kafka_commits()
            self._kafka_offsets = {tp: o for tp, o in self._kafka_offsets.items() if tp.partition not in partitions}
            self._pending.clear()  # nothing is prepared and unwritten here; keep it that way
            for p in partitions:
                self._positions.pop(p, None)
                self._origins.pop(p, None)
            self._forget_sources(lambda source: source[0] in partitions)
            self.cache.drop_partitions(partitions)
        await self._publisher.revoke(partitions)
        if partitions:
            logger.info("partitions revoked: %s", sorted(partitions))

    async def assigned(self, partitions: set[int]) -> None:
        """Resume each partition from the offset stored in PostgreSQL."""
        stored = await _retry(lambda: self._store.load_offsets(partitions), "load offsets", self._stop)
        async with self._lock:
            for p in partitions:
                self._positions[p] = stored.get(p)
                if p in stored:
                    self._consumer.seek(TopicPartition(self.settings.input_topic, p), stored[p])
        self._publisher.assign(partitions)
        self._assignment_done.set()
        if partitions:
            logger.info("partitions assigned: %s (stored offsets %s)", sorted(partitions), stored)

    def _forget_sources(self, gone: Any) -> None:
        self._refused = {k: v for k, v in self._refused.items() if not gone(k)}
        self._dead_lettered = {k for k in self._dead_lettered if not gone(k)}

    # -- one batch ---------------------------------------------------------------------------------------------

    def _owned(self, batch: dict[TopicPartition, list[Any]]) -> dict[TopicPartition, list[Any]]:
        """The records of ``batch`` this consumer owns and has not committed yet.

        aiokafka may hand out records fetched before ``assigned`` sought to the stored
        offset. Those start at the offset committed to Kafka, which never passes the one
        stored in PostgreSQL (it is committed after it), so dropping what lies below the
        stored offset leaves exactly the records that follow it.
        """
        owned = {}
        for tp, recs in batch.items():
            if tp.partition not in self._positions:
                continue
            start = self._positions[tp.partition]
            if start is not None and recs[0].offset < start:
                recs = [r for r in recs if r.offset >= start]
            if recs:
                owned[tp] = recs
        return owned

    async def process_batch(self, batch: dict[TopicPartition, list[Any]]) -> None:
        await self._assignment_done.wait()
        delay = 0.1
        deadline: float | None = None
        while True:
            try:
                async with self._lock:
                    owned = self._owned(batch)
                    if not owned:
                        return
                    prepared = await self._prepare(owned)
                    if not await self._settle(UNWRITTEN_RECORDS):  # a batch before it failed: it is void
                        return
                    self._launch(prepared)
                return
            except TransientError as exc:  # loading projections; nothing was changed
                if self._stop.is_set():
                    deadline = deadline or time.monotonic() + 5.0
                    if time.monotonic() > deadline:
                        logger.error("giving up the batch in flight to stop (nothing was committed): %s", exc)
                        return
                telemetry.RETRIES.add(1)
                logger.warning("%s; retrying the batch in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _settle(self, keep: int) -> bool:
        """Wait until at most ``keep`` records (and REPLAYWATCH_INFLIGHT_MB) are prepared
        and not yet committed. False if a write was not committed (fenced, refused, or
        given up to stop): then every batch after it is void, and every partition resumes
        from the offsets PostgreSQL holds. Call with the lock held."""
        keep_bytes = 0 if keep == 0 else self.settings.inflight_mb * 1024 * 1024
        failure: BaseException | None = None
        while self._writes and (
            self._unwritten() > keep or self._unwritten_bytes() > keep_bytes or self._done(self._writes[0])
        ):
            try:
                await self._task(self._writes[0])
            except (Fenced, _GaveUp, _Void, _Rewind) as exc:
                failure = exc
                tasks = [self._task(w) for w in self._writes]
                for later in tasks:
                    later.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                self._writes.clear()
                break
            self._writes.popleft()
        if failure is None:
            return True
        if isinstance(failure, Fenced):
            logger.warning("%s; resuming every partition from PostgreSQL", failure)
        elif isinstance(failure, _Rewind):
            self._refused.update(failure.refused)
            logger.warning(
                "%d records were refused for good (%s); they are dead-lettered and the rest re-read from PostgreSQL's "
                "offsets", len(failure.refused), next(iter(failure.refused.values())),
            )  # fmt: skip
        elif isinstance(failure, _GaveUp):
            logger.error("giving up the batches in flight to stop (not committed): %s", failure.__cause__)
        await self._reload(set(self._positions))
        return False

    def _unwritten(self) -> int:
        return sum(w.records for w in self._writes)

    def _unwritten_bytes(self) -> int:
        return sum(w.size for w in self._writes)

    @staticmethod
    def _task(w: _Write) -> asyncio.Task[None]:
        assert w.task is not None
        return w.task

    def _done(self, w: _Write) -> bool:
        return self._task(w).done()

    def _launch(self, prepared: _Prepared) -> None:
        """Queue a prepared batch. While a write is committing, the batches prepared
        meanwhile gather in the next write and commit in one statement (a group commit):
        at low rates batches are small, and a commit costs about the same for 30
        records as for 3,000."""
        last = self._writes[-1] if self._writes else None
        if last is not None and not last.started and last.records < GROUP_RECORDS:
            last.batches.append(prepared)
            return
        w = _Write([prepared])
        before = self._task(last) if last is not None else None
        w.task = asyncio.create_task(self._write(w, before), name=f"write-{prepared.seq}")
        self._writes.append(w)

    async def _reload(self, partitions: set[int]) -> None:
        """Forget what was prepared and not committed; seek to the stored offsets."""
        self._pending.clear()
        self.cache.drop_partitions(partitions)
        stored = await _retry(lambda: self._store.load_offsets(partitions), "load offsets", self._stop)
        for p in partitions:
            if p in self._positions:
                self._positions[p] = stored.get(p)
                start = stored.get(p, self._origins.get(p))
                if start is not None:
                    self._consumer.seek(TopicPartition(self.settings.input_topic, p), start)

    async def _prepare(self, batch: dict[TopicPartition, list[Any]]) -> _Prepared:
        """Decode, compare and encode a batch on top of the projections before it
        (committed or pending). Changes no state until it returns. Whatever one record
        raises sets that record aside for the dead-letter topic; the others go on."""
        started = time.perf_counter()
        records = [r for recs in batch.values() for r in recs]
        # 1. decode (pure), yielding now and then so that IO in flight progresses
        decoded: list[tuple[Any, Attempt]] = []
        bad: list[tuple[Any, BadRecordError]] = []
        for i in range(0, len(records), CHUNK):
            good_part, bad_part = decode_records(records[i : i + CHUNK], self.limits, self._refused)
            decoded += good_part
            bad += bad_part
            await asyncio.sleep(0)
        # 2. the projections this batch starts from: pending, cached, else one query
        keys = {(a.run_id, a.step_id) for _, a in decoded}
        known: dict[StepKey, StepProjection] = {}
        missing = []
        for k in keys:
            hit = self._pending.get(k)
            p = hit[1] if hit is not None else self.cache.get(k)
            if p is None:
                missing.append(k)
            else:
                known[k] = p
        unreadable: dict[StepKey, Exception] = {}
        known.update(await self._store.load_projections(missing, self.config, unreadable))
        if unreadable:
            bad += [(r, failed(r, "loading its step", unreadable[k])) for r, a in decoded
                    if (k := (a.run_id, a.step_id)) in unreadable]  # fmt: skip
            decoded = [(r, a) for r, a in decoded if (a.run_id, a.step_id) not in unreadable]
        # 3. compare (pure), a chunk at a time; each chunk's diffs start uploading at once
        result = BatchResult(bad=bad)
        state = dict(known)
        diffs: dict[str, Comparison] = {}
        uploads: list[asyncio.Task[None]] = []
        for i in range(0, len(decoded), CHUNK):
            part = apply_records(decoded[i : i + CHUNK], state, self.config)
            for k, (partition, proj) in part.projections.items():
                state[k] = proj
                result.projections[k] = (partition, proj)
            for k, recs in part.sources.items():
                result.sources.setdefault(k, []).extend(recs)
            result.emitted += part.emitted
            result.bad += part.bad
            new = {c.diff.sha256: c for _, _, c in part.emitted if c.diff is not None and c.diff.sha256 not in diffs}
            if new:
                diffs.update(new)
                task = asyncio.create_task(self._store_diffs(list(new.values())))
                task.add_done_callback(_retrieve)  # a void batch's uploads may fail unobserved
                uploads.append(task)
            await asyncio.sleep(0)
        del decoded  # the parsed attempts: the largest objects of a batch
        # 4. the batch's statement
        commit = BatchCommit(
            offsets={tp.partition: (self._positions[tp.partition], recs[-1].offset + 1) for tp, recs in batch.items()},
            projections={k: p for k, (_, p) in result.projections.items()},
            previous=known,
        )
        detected = int(time.time() * 1000)
        emitted = []
        for n, (record, occurred_at_ms, c) in enumerate(result.emitted, 1):
            if n % CHUNK == 0:
                await asyncio.sleep(0)
            try:
                outbox, row = self._outgoing(record, occurred_at_ms, c, detected)
            except Exception as exc:
                result.bad.append((record, failed(record, "encoding its event", exc)))
                continue
            emitted.append((record, occurred_at_ms, c))
            commit.outbox.append(outbox)
            commit.comparisons.append(row)
        result.emitted = emitted
        # 5. prepared: later batches build on it
        self._seq += 1
        for tp, recs in batch.items():
            if self._positions[tp.partition] is None:
                self._origins.setdefault(tp.partition, recs[0].offset)
            self._positions[tp.partition] = recs[-1].offset + 1
        for k, (_, proj) in result.projections.items():
            self._pending[k] = (self._seq, proj)
        size = sum(len(r.value or b"") for r in records)
        return _Prepared(self._seq, len(records), size, result, commit, list(diffs.values()), uploads, started)

    def _outgoing(
        self, record: Any, occurred_at_ms: int, c: Comparison, detected: int
    ) -> tuple[OutboxRow, ComparisonRow]:
        """The outbox row (the encoded event, cut to fit the output topic) and the history
        row of one comparison."""
        uri = self._artifacts.uri(c.diff.sha256) if c.diff is not None else None
        key = c.run_id.encode()
        value = codec.encode_comparison(
            codec.comparison_record(
                c, diff_uri=uri, source=(record.topic, record.partition, record.offset), occurred_at_ms=occurred_at_ms,
                detected_at_ms=detected,
            ),
            max_bytes=self._event_bytes - len(key),
        )  # fmt: skip
        outbox = OutboxRow(record.partition, record.offset, c.event_id, key, value, c.verdict.value)
        kind, sha = (c.diff.kind.value, c.diff.sha256) if c.diff else (None, None)
        row = ComparisonRow(c.run_id, c.step_id, c.baseline_attempt, c.current_attempt, c.token_delta, c.cost_delta,
                            kind, sha, uri, detected)  # fmt: skip
        return outbox, row

    async def _write(self, w: _Write, before: asyncio.Task[None] | None) -> None:
        """Diffs, dead letters, then one statement for the batches of ``w``, once the
        write ``before`` it has committed; retried until it commits, is fenced, is
        refused (``_Rewind``), or the pipeline stops (``_GaveUp``)."""
        if before is not None:
            await asyncio.wait([before])  # its outcome is _settle's to handle; if it failed, this is cancelled
            if before.cancelled() or before.exception() is not None:
                raise _Void()
        w.started = True
        group = w.batches
        commit = BatchCommit.merged([b.commit for b in group])
        bad = [x for b in group for x in b.result.bad]
        delay = 0.1
        deadline: float | None = None
        while True:
            try:
                uploads = [t for b in group for t in b.uploads]
                if uploads:
                    for b in group:
                        b.uploads = []
                    await asyncio.gather(*uploads)
                else:
                    await self._store_diffs([c for b in group for c in b.diffs])  # a retry
                await self._dlq.send(bad, self._dead_lettered)  # acknowledged before their offsets are committed
                await self._store.commit_batch(commit)
                break
            except _DiffsRefused as exc:
                raise _Rewind(self._refused_diffs(group, exc.refused)) from None
            except RecordRejected as exc:
                refused = await self._refused_steps(group, commit)
                if refused:
                    raise _Rewind(refused) from None
                error: Exception = exc  # not reproduced row by row: treat it as passing
            except TransientError as exc:
                error = exc
            if self._stop.is_set():
                deadline = deadline or time.monotonic() + 5.0
                if time.monotonic() > deadline:
                    raise _GaveUp() from error
            telemetry.RETRIES.add(1)
            logger.warning("%s; retrying the batch in %.1fs", error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        self._committed(group, commit)

    def _committed(self, group: list[_Prepared], commit: BatchCommit) -> None:
        """A write committed: tell Kafka's group (for lag tools, and so that a restart's
        first fetch starts near here), cache the projections, let the publisher go."""
        topic = self.settings.input_topic
        offsets = {TopicPartition(topic, p): nxt for p, (_, nxt) in commit.offsets.items()}
        for b in group:
            for k, (partition, proj) in b.result.projections.items():
                self.cache.put(k, partition, proj)
                hit = self._pending.get(k)
                if hit is not None and hit[0] == b.seq:
                    del self._pending[k]
            self.processed += b.records
            telemetry.record_batch(
                b.records,
                len(b.result.bad),
                [c.verdict.value for _, _, c in b.result.emitted],
                time.perf_counter() - b.started,
            )
        ends = {p: nxt for p, (_, nxt) in commit.offsets.items()}
        self._forget_sources(lambda source: source[0] in ends and source[1] < ends[source[0]])
        self._commit_to_kafka(offsets)
        self._publisher.offer(commit.offsets, commit.outbox)

    def _refused_diffs(
        self, group: list[_Prepared], refused: dict[str, RecordRejected]
    ) -> dict[Source, BadRecordError]:
        return {
            (record.partition, record.offset): refused[c.diff.sha256]
            for b in group
            for record, _, c in b.result.emitted
            if c.diff is not None and c.diff.sha256 in refused
        }

    async def _refused_steps(self, group: list[_Prepared], commit: BatchCommit) -> dict[Source, BadRecordError]:
        """PostgreSQL refused the statement's rows: find the steps whose rows it refuses
        (halving the set of steps, each half tried in a transaction that is rolled back)
        and name their records."""
        reasons: dict[StepKey, str] = {}

        async def search(keys: list[StepKey]) -> None:
            reason = await self._store.probe(commit.only(set(keys)))
            if reason is None:
                return
            if len(keys) == 1:
                reasons[keys[0]] = reason
                return
            await search(keys[: len(keys) // 2])
            await search(keys[len(keys) // 2 :])

        await search(list(commit.projections))
        return {
            (r.partition, r.offset): RecordRejected(
                f"PostgreSQL refused the rows of step {k[1]!r} of run {k[0]!r}: {reason}"
            )
            for k, reason in reasons.items()
            for b in group
            for r in b.result.sources.get(k, [])
        }

    async def _flush_kafka_commits(self) -> None:
        """Commit to Kafka's group now what is committed to PostgreSQL (on revoke and stop)."""
        wait = self.settings.shutdown_seconds / 4
        if self._kafka_commit is not None:
            await asyncio.wait([self._kafka_commit], timeout=wait)
        self._commit_to_kafka({}, now=True)
        if self._kafka_commit is not None:
            await asyncio.wait([self._kafka_commit], timeout=wait)

    def _commit_to_kafka(self, offsets: dict[TopicPartition, int], *, now: bool = False) -> None:
        """Tell Kafka's group the offsets committed to PostgreSQL, at most once every
        KAFKA_COMMIT_EVERY seconds (or ``now``): advisory only, PostgreSQL holds the truth,
        and an offset commit per batch costs the broker more than the batch's fetch."""
        self._kafka_offsets.update(offsets)
        due = time.monotonic() - self._kafka_committed_at >= KAFKA_COMMIT_EVERY
        if not self._kafka_offsets or not (now or due) or (self._kafka_commit and not self._kafka_commit.done()):
            return
        pending, self._kafka_offsets = self._kafka_offsets, {}
        self._kafka_committed_at = time.monotonic()

        async def commit() -> None:
            with contextlib.suppress(Exception):
                await self._consumer.commit(pending)

        self._kafka_commit = asyncio.create_task(commit())

    async def _store_diffs(self, diffs: list[Comparison]) -> None:
        """Put the diffs; the ones S3 refuses for good are raised together (``_DiffsRefused``)."""

        async def put(c: Comparison) -> None:
            assert c.diff is not None
            await self._artifacts.put(c.diff, c.run_id, c.step_id)

        results = await asyncio.gather(*(put(c) for c in diffs), return_exceptions=True)
        refused: dict[str, RecordRejected] = {}
        for c, result in zip(diffs, results, strict=True):
            if isinstance(result, RecordRejected):
                assert c.diff is not None
                refused[c.diff.sha256] = result
            elif isinstance(result, BaseException):
                raise result
        if refused:
            raise _DiffsRefused(refused)


def _tune_gc() -> None:
    """Keep the cyclic garbage collector off the hot path.

    Each decoded record allocates hundreds of containers (its parsed snapshot); with
    CPython's default thresholds every few hundred records start a collection. The
    step cache keeps its snapshots as bytes (``PreparedAttempt``), so what is parsed
    dies young, freed by reference counting. Freezing what exists after start-up and
    collecting the young generation less often leaves the collector for what actually
    makes cycles (asyncio and client objects): measured, one young collection in 25 s
    at 1,000 events/s.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)


async def ensure_topics(admin: AIOKafkaAdminClient, settings: Settings) -> None:
    """Create the input, output and dead-letter topics when missing."""
    async with translate_kafka_errors("list topics"):
        existing = set(await admin.list_topics())
    wanted = [t for t in (settings.input_topic, settings.output_topic, settings.dlq_topic) if t not in existing]
    if not wanted:
        return
    config = {"max.message.bytes": str(MAX_MESSAGE_BYTES)}
    async with translate_kafka_errors("create topics"):
        resp = await admin.create_topics([NewTopic(t, settings.partitions, 1, topic_configs=config) for t in wanted])
    for topic, code, *_ in resp.topic_errors:
        if code not in (0, TopicAlreadyExistsError.errno):  # already there: another instance was first
            raise ConfigError(f"cannot create topic {topic!r}: {for_code(code).__name__}; create it yourself")
    logger.info("created topics %s with %d partitions", wanted, settings.partitions)


async def max_message_bytes(admin: AIOKafkaAdminClient, topic: str) -> int:
    """The topic's ``max.message.bytes``: the largest record batch it accepts."""
    async with translate_kafka_errors(f"describe topic {topic}"):
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"max.message.bytes": None})]
        )
    for response in responses:
        for error_code, error_message, _type, _name, entries in response.resources:
            if error_code:
                raise ConfigError(f"cannot read the configuration of topic {topic!r}: {error_code} {error_message}")
            for entry in entries:
                if entry[0] == "max.message.bytes":
                    return int(entry[1])
    return 1024 * 1024 + 12  # the broker default


async def _retry(fn: Any, what: str, stop: asyncio.Event) -> Any:
    delay = 0.2
    while True:
        try:
            return await fn()
        except TransientError as exc:
            if stop.is_set():
                raise
            logger.warning("%s failed: %s; retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
