"""BatchCommit.merged: consecutive batches committed as one statement (a group commit)."""

from __future__ import annotations

from typing import Any, cast

from replaywatch.core.types import BatchCommit, OutboxRow

A, B, C = ("run", "a"), ("run", "b"), ("run", "c")


def row(offset: int) -> OutboxRow:
    return OutboxRow(0, offset, f"id-{offset}", None, b"v", "within_tolerance")


def commit(offsets: dict[int, tuple[int | None, int]], projections: dict[Any, Any], previous: dict[Any, Any],
           outbox: list[OutboxRow]) -> BatchCommit:  # fmt: skip
    return BatchCommit(offsets=offsets, projections=projections, previous=previous, outbox=outbox)


def test_one_batch_is_itself() -> None:
    c = commit({0: (None, 5)}, {A: "a1"}, {}, [row(1)])
    assert BatchCommit.merged([c]) is c


def test_offsets_advance_from_the_first_batch_to_the_last() -> None:
    merged = BatchCommit.merged([
        commit({0: (None, 5), 1: (10, 12)}, {}, {}, []),
        commit({1: (12, 20)}, {}, {}, []),
        commit({0: (5, 9), 2: (3, 4)}, {}, {}, []),
    ])  # fmt: skip
    assert merged.offsets == {0: (None, 9), 1: (10, 20), 2: (3, 4)}


def test_the_last_projection_wins_and_events_keep_their_order() -> None:
    merged = BatchCommit.merged([
        commit({0: (0, 2)}, {A: "a1", B: "b1"}, {}, [row(0), row(1)]),
        commit({0: (2, 4)}, {A: "a2"}, {A: "a1"}, [row(2), row(3)]),
    ])  # fmt: skip
    assert cast(dict[Any, Any], merged.projections) == {A: "a2", B: "b1"}
    assert [r.source_offset for r in merged.outbox] == [0, 1, 2, 3]


def test_what_a_step_is_compared_with_is_what_was_committed_before_the_group() -> None:
    # A was committed before the group (a0); B is new in the first batch; C only in the second.
    merged = BatchCommit.merged([
        commit({0: (0, 2)}, {A: "a1", B: "b1"}, {A: "a0"}, []),
        commit({0: (2, 4)}, {A: "a2", B: "b2", C: "c1"}, {A: "a1", B: "b1", C: "c0"}, []),
    ])  # fmt: skip
    # B's row does not exist yet: it must not look unchanged (its snapshots must be sent)
    assert cast(dict[Any, Any], merged.previous) == {A: "a0", C: "c0"}
