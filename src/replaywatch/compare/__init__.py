"""The pure comparison engine: no IO, no asyncio, no clock."""

from replaywatch.compare.canonical import Json, canonical_bytes, parse_json, sha256_hex
from replaywatch.compare.engine import (
    ABSENT,
    Attempt,
    CompareConfig,
    Comparison,
    Diff,
    DiffKind,
    PreparedAttempt,
    Verdict,
    compare,
    compare_attempts,
    comparison_id,
    prepare,
)
from replaywatch.compare.ignore import IgnoreRules

__all__ = [
    "ABSENT",
    "Attempt",
    "CompareConfig",
    "Comparison",
    "Diff",
    "DiffKind",
    "IgnoreRules",
    "Json",
    "PreparedAttempt",
    "Verdict",
    "canonical_bytes",
    "compare",
    "compare_attempts",
    "comparison_id",
    "parse_json",
    "prepare",
    "sha256_hex",
]
