"""The one error tree of replaywatch.

::

    ReplaywatchError
    ├── TransientError          retry with backoff (a service is slow or down)
    ├── GaveUp                  the process is stopping and a service is still down: the
    │                           call is abandoned (the next owner resumes from PostgreSQL)
    ├── Fenced                  another consumer moved our partition on: drop what was
    │   │                       prepared and resume from PostgreSQL (never retried as is)
    │   ├── StaleProjection     a step changed in PostgreSQL since it was read (a replay
    │   │                       wrote it): read it again
    │   └── EnvelopesActedOn    an operator reset or relearned a cohort since its envelopes
    │                           were read: read them again, with the action
    ├── BadRecordError          this record can never be processed: dead-letter it (its reason)
    │   ├── UndecodableRecord   not Avro of the contract (avro_decode)
    │   ├── UnknownSchemaId     Confluent framing with an unknown schema id (unknown_schema_id)
    │   ├── IncompatibleSchema  a writer schema the reader schema cannot resolve (incompatible_schema)
    │   ├── ContractViolation   an id, attempt or event id outside the contract (contract)
    │   ├── InvalidJsonError    JSON text that does not parse, or NaN/Infinity (invalid_json)
    │   ├── JsonTooDeep         nests deeper than the contract's 1,024 levels (too_deep)
    │   ├── RecordTooLarge      over a byte limit (too_large)
    │   │   └── EventTooLarge   its comparison event is over the output topic's limit
    │   ├── TooCostly           its comparison needs more CPU than the budget (too_costly)
    │   ├── RecordRejected      a service refused what the record makes, for good (rejected)
    │   └── RecordFailed        an unexpected exception while processing it (internal)
    ├── NotFound                what a read-only command asked for is not stored
    ├── CorruptDiff             a stored diff whose bytes do not hash to its name
    └── UsageError              misuse or configuration: fail fast, say what to do
        ├── ConfigError
        │   ├── IgnorePathError
        │   └── ServiceRefused  a service refuses us for good (authorization, a missing
        │                       topic or bucket): the process stops with this message
        ├── MissingOutputSnapshots
        └── DevstackError

Adapters translate their library's exceptions into these at the boundary, so the
core and the pipeline never see an aiokafka, asyncpg or botocore exception. Each
``BadRecordError`` names its dead-letter ``reason``. Inside the write stage nothing is
raised to steer: a write ends in a value (``stages.writer.Committed`` or ``Voided``).
"""

from __future__ import annotations

from typing import ClassVar


class ReplaywatchError(Exception):
    """Root of every error replaywatch raises on purpose."""


class TransientError(ReplaywatchError):
    """A dependency failed in a way that may pass: retry with backoff."""


class GaveUp(ReplaywatchError):
    """A call was abandoned because the process is stopping (its cause: the last
    transient error)."""


class Fenced(ReplaywatchError):
    """The stored offset of a partition is not where this consumer left it: another
    member of the group owns the partition now. Drop its state and seek again."""


class StaleProjection(Fenced):
    """A step changed in PostgreSQL since this writer read it (a backfill or a rebuild
    wrote it): nothing was written; drop the cached steps and read them again."""


class EnvelopesActedOn(Fenced):
    """An operator reset or relearned a cohort (``replaywatch baseline``) since this
    writer read the envelopes: nothing was written; read them again, with the action."""


class BadRecordError(ReplaywatchError):
    """A record that cannot be processed. It is dead-lettered, never retried."""

    reason: ClassVar[str] = "bad_record"


class UndecodableRecord(BadRecordError):
    """Not a StepAttemptEvent in Avro binary (or bytes left over after one)."""

    reason = "avro_decode"


class UnknownSchemaId(BadRecordError):
    """Confluent framing with a schema id the registry does not know."""

    reason = "unknown_schema_id"


class IncompatibleSchema(BadRecordError):
    """A writer schema from the registry that replaywatch's reader schema cannot resolve
    (a field it needs is missing without a default, a type changed, not Avro)."""

    reason = "incompatible_schema"


class ContractViolation(BadRecordError):
    """An id, an attempt number or an event id outside the contract."""

    reason = "contract"


class InvalidJsonError(BadRecordError):
    """JSON text that does not parse, or that holds NaN or Infinity."""

    reason = "invalid_json"


class JsonTooDeep(BadRecordError):
    """JSON that nests deeper than the contract allows."""

    reason = "too_deep"


class RecordTooLarge(BadRecordError):
    """A record, an id, its attestation ids or its tool events are over a byte limit."""

    reason = "too_large"


class EventTooLarge(RecordTooLarge):
    """The comparison event a record caused is larger than the output topic accepts:
    the publisher dead-letters the event (headers only) and its partition goes on."""


class TooCostly(BadRecordError):
    """Comparing this record needed more CPU than one record may take
    (``REPLAYWATCH_RECORD_CPU_SECONDS``): it is dead-lettered with the figure, and the
    event loop, the group's heartbeats and the partition go on."""

    reason = "too_costly"


class RecordRejected(BadRecordError):
    """A service refused, for good, what this record makes (PostgreSQL refused its
    step's rows, or S3 its diff): the record is dead-lettered, the rest committed."""

    reason = "rejected"


class RecordFailed(BadRecordError):
    """An unexpected exception while processing this one record: a bug to report, not
    a reason to stop watching the fleet. The message carries the exception's class."""

    reason = "internal"


class NotFound(ReplaywatchError):
    """What was asked for is not stored: a diff object, a comparison, a run (the read-only
    commands say so and exit with their "not found" status)."""


class CorruptDiff(ReplaywatchError):
    """A diff object whose bytes do not hash to its name, or are not a JSON object."""


class UsageError(ReplaywatchError):
    """Misuse or bad configuration. The message says what to change."""


class ConfigError(UsageError):
    """A setting is out of range or malformed."""


class ServiceRefused(ConfigError):
    """A service refuses replaywatch for good: not authorized, or a topic or bucket is
    missing. Retrying cannot help; the process stops with one message that says what
    to fix."""


class IgnorePathError(ConfigError):
    """An ignore path does not follow the documented syntax."""


class MissingOutputSnapshots(UsageError):
    """A step has attempts but none carries an output snapshot: nothing to compare."""


class DevstackError(UsageError):
    """The local stack could not be started or stopped."""
