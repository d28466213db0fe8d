"""The one error tree of replaywatch.

::

    ReplaywatchError
    ├── TransientError          retry with backoff (a service is slow or down)
    │   └── Fenced              another consumer moved our partition on: drop it, reload
    ├── BadRecordError          this record can never be processed: dead-letter it
    │   ├── InvalidJsonError    JSON text that does not parse, or NaN/Infinity
    │   └── SnapshotTooDeep     nests deeper than the comparison can walk
    └── UsageError              misuse or configuration: fail fast, say what to do
        ├── ConfigError
        ├── IgnorePathError
        ├── MissingOutputSnapshots
        └── DevstackError

Adapters translate their library's exceptions into these at the boundary, so the
core and the pipeline never see an aiokafka, asyncpg or botocore exception.
"""

from __future__ import annotations


class ReplaywatchError(Exception):
    """Root of every error replaywatch raises on purpose."""


class TransientError(ReplaywatchError):
    """A dependency failed in a way that may pass: retry with backoff."""


class Fenced(TransientError):
    """The stored offset of a partition is not where this consumer left it: another
    member of the group owns the partition now. Drop its state and seek again."""


class BadRecordError(ReplaywatchError):
    """A record that breaks the contract. It is dead-lettered, never retried."""


class InvalidJsonError(BadRecordError):
    """JSON text that does not parse, or that holds NaN or Infinity."""


class SnapshotTooDeep(BadRecordError):
    """A snapshot nests deeper than the comparison can walk."""

    reason = "too_deep"


class UsageError(ReplaywatchError):
    """Misuse or bad configuration. The message says what to change."""


class ConfigError(UsageError):
    """A setting is out of range or malformed."""


class IgnorePathError(ConfigError):
    """An ignore path does not follow the documented syntax."""


class MissingOutputSnapshots(UsageError):
    """A step has attempts but none carries an output snapshot: nothing to compare."""


class DevstackError(UsageError):
    """The local stack could not be started or stopped."""
