"""Comparison ids: the RFC's name-based UUIDs, equal to the standard library's."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from replaywatch.compare import comparison_id
from replaywatch.compare.ids import uuid5_text


@given(st.uuids(), st.text())
def test_equal_to_the_standard_librarys_uuid5(namespace: uuid.UUID, name: str) -> None:
    assert uuid5_text(namespace, name) == str(uuid.uuid5(namespace, name))


def test_a_comparison_id_is_a_version_5_uuid_of_its_pair() -> None:
    got = uuid.UUID(comparison_id("run-1", "step", 1, 2))
    assert got.version == 5 and got.variant == uuid.RFC_4122
    assert comparison_id("run-1", "step", 1, 2) == str(got) != comparison_id("run-1", "step", 1, 3)
