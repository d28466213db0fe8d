"""Every released version of the two schemas stays in ``schemas/history/``, and the
current schemas are BACKWARD compatible with each: a consumer on the current schema
reads what any earlier producer wrote (Apache Avro's own compatibility checker)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import avro.schema
import pytest
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
HISTORY = SCHEMAS / "history"
NAMES = ("step_attempt", "replay_comparison")


def versions(name: str) -> list[Path]:
    found = sorted(HISTORY.glob(f"{name}.v*.avsc"), key=lambda p: int(re.findall(r"\.v(\d+)\.avsc$", p.name)[0]))
    assert found, f"no released version of {name} in {HISTORY}"
    return found


def compatible(reader: Path, writer: Path) -> tuple[bool, str]:
    result = ReaderWriterCompatibilityChecker().get_compatibility(  # type: ignore[no-untyped-call]
        avro.schema.parse(reader.read_text()), avro.schema.parse(writer.read_text())
    )
    return result.compatibility is SchemaCompatibilityType.compatible, str(result.messages)


@pytest.mark.parametrize("name", NAMES)
def test_the_current_schema_is_the_newest_released_one(name: str) -> None:
    newest = versions(name)[-1]
    current = SCHEMAS / f"{name}.avsc"
    assert json.loads(current.read_text()) == json.loads(newest.read_text()), (
        f"{current.name} changed: add it to {HISTORY} as the next version ({name}.v{len(versions(name)) + 1}.avsc)"
    )


@pytest.mark.parametrize(
    ("name", "old"), [(n, p) for n in NAMES for p in versions(n)], ids=lambda v: getattr(v, "name", v)
)
def test_the_current_schema_reads_every_earlier_version(name: str, old: Path) -> None:
    ok, why = compatible(SCHEMAS / f"{name}.avsc", old)
    assert ok, f"{name}.avsc cannot read data written with {old.name}: {why}"


def test_the_checker_catches_a_breaking_change(tmp_path: Path) -> None:
    """The check can fail: a field added without a default breaks old data."""
    doc = json.loads((SCHEMAS / "replay_comparison.avsc").read_text())
    doc["fields"].append({"name": "severity", "type": "string"})
    broken = tmp_path / "broken.avsc"
    broken.write_text(json.dumps(doc))
    ok, why = compatible(broken, versions("replay_comparison")[0])
    assert not ok and "severity" in why
