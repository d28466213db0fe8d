"""Replays: parsing --from/--to/--partitions, resolving them, and the re-scoring's flips."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from replaywatch.compare import CompareConfig, compare
from replaywatch.compare import prepare as prepare_attempt
from replaywatch.core.batch import superseding_id
from replaywatch.exceptions import UsageError
from replaywatch.replay.ranges import Position, parse_partitions, parse_position, resolve
from replaywatch.replay.rescore import flips, report
from replaywatch.store.jobs import Outcome


def test_positions_parse() -> None:
    assert parse_position("beginning", end=False) == Position("beginning")
    assert parse_position("now", end=True) == Position("now")
    assert parse_position("1200", end=False) == Position("offset", offset=1200)
    assert parse_position("0:10,3:90", end=True) == Position("offsets", offsets={0: 10, 3: 90})
    # a time: with a zone, with Z, or without (UTC)
    utc = parse_position("2026-11-20T08:00:00Z", end=False)
    assert utc == Position("time", time_ms=1_795_161_600_000)
    assert parse_position("2026-11-20T08:00:00", end=False) == utc
    assert parse_position("2026-11-20T09:00:00+01:00", end=False) == utc


@pytest.mark.parametrize(
    ("text", "end", "says"),
    [
        ("now", False, "--from 'now' is not beginning"),
        ("beginning", True, "--to 'beginning' is not now"),
        ("yesterday", False, "ISO-8601"),
        ("0:1,0:2", False, "names a partition twice"),
        ("-5", True, "--to '-5'"),
    ],
)
def test_bad_positions_say_what_is_accepted(text: str, end: bool, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        parse_position(text, end=end)


def test_partitions_parse() -> None:
    assert parse_partitions(None) is None and parse_partitions(" ") is None
    assert parse_partitions("0,2, 5") == {0, 2, 5}
    with pytest.raises(UsageError, match="partition numbers"):
        parse_partitions("a,b")


class Topic:
    """What resolving asks of Kafka, for a topic whose partition p holds offsets
    [low[p], high[p]) with record i at time times[p][i - low[p]]."""

    def __init__(self, low: dict[int, int], high: dict[int, int], times: dict[int, list[int]]) -> None:
        self.low, self.high, self.times = low, high, times

    async def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.low[tp.partition] for tp in tps}

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.high[tp.partition] for tp in tps}

    async def offsets_for_times(self, wanted: dict[TopicPartition, int]) -> dict[TopicPartition, Any]:
        out: dict[TopicPartition, Any] = {}
        for tp, ts in wanted.items():
            at = [i for i, t in enumerate(self.times[tp.partition]) if t >= ts]
            out[tp] = SimpleNamespace(offset=self.low[tp.partition] + at[0]) if at else None
        return out


async def test_resolve_keeps_every_range_inside_what_the_topic_holds() -> None:
    topic = Topic({0: 5, 1: 0}, {0: 50, 1: 8}, {0: list(range(100, 145)), 1: [10 * i for i in range(8)]})
    begin, now = Position("beginning"), Position("now")
    assert await resolve(topic, "t", {0, 1}, None, begin, now) == {0: (5, 50), 1: (0, 8)}
    # an offset below the beginning or past the end is clamped
    assert await resolve(topic, "t", {0, 1}, None, Position("offset", offset=2), Position("offset", offset=99)) == {
        0: (5, 50),
        1: (2, 8),
    }
    # per-partition offsets choose the partitions, unless --partitions says more (those from the beginning)
    start = Position("offsets", offsets={1: 3})
    assert await resolve(topic, "t", {0, 1}, None, start, now) == {1: (3, 8)}
    assert await resolve(topic, "t", {0, 1}, {0, 1}, start, now) == {0: (5, 50), 1: (3, 8)}
    # a time: the first offset at or after it; none after: the end
    assert await resolve(topic, "t", {0, 1}, None, Position("time", time_ms=41), now) == {0: (5, 50), 1: (5, 8)}
    assert await resolve(topic, "t", {0, 1}, {1}, begin, Position("time", time_ms=1000)) == {1: (0, 8)}
    with pytest.raises(UsageError, match=r"partitions \[7\] do not exist; the topic has partitions \[0, 1\]"):
        await resolve(topic, "t", {0, 1}, {7}, begin, now)


@given(st.integers(0, 20), st.integers(0, 40), st.integers(0, 60), st.integers(0, 60), st.integers(0, 10**6))
async def test_resolved_ranges_are_always_inside_the_topic(low: int, size: int, a: int, b: int, t: int) -> None:
    high = low + size
    topic = Topic({0: low}, {0: high}, {0: [10 * i for i in range(size)]})
    for start in (Position("offset", offset=a), Position("time", time_ms=t), Position("beginning")):
        for end in (Position("offset", offset=b), Position("time", time_ms=t), Position("now")):
            (first, last) = (await resolve(topic, "t", {0}, None, start, end))[0]
            assert low <= first <= high and low <= last <= high


def comparison(run: str, tokens: float, config: CompareConfig) -> Any:
    a = prepare_attempt(1, {"tokens": 100, "m": "x"}, None, config)
    b = prepare_attempt(2, {"tokens": tokens, "m": "x"}, None, config)
    return compare(run, "s", a, b, config)


def test_flips_are_the_comparisons_whose_verdict_differs_from_the_last_published() -> None:
    looser = CompareConfig.build(tokens_tolerance=0.1)
    within, drift = comparison("r1", 105, looser), comparison("r2", 150, looser)
    new = comparison("r3", 105, looser)
    record = SimpleNamespace(partition=0, offset=1)
    outcomes = {
        within.event_id: Outcome(within.event_id, "drift"),  # published drift, now within: a flip
        drift.event_id: Outcome("later-id", "drift"),  # published drift, still drift
    }
    got = flips([(record, 0, within), (record, 0, drift), (record, 0, new)], outcomes)
    # r3's pair was never published: nothing to correct, so no flip (it is counted apart)
    assert [(c.run_id, old) for _, _, c, old in got] == [("r1", outcomes[within.event_id])]
    fp = looser.fingerprint()
    summary = report(got, 3, 1, fp, CompareConfig().fingerprint())
    assert summary["counts"] == {"drift -> within_tolerance": 1}
    assert summary["unchanged"] == 1 and summary["flipped"] == 1 and summary["unpublished"] == 1
    assert summary["steps"][0]["supersedes"] == within.event_id
    assert summary["steps"][0]["event_id"] == superseding_id(within.event_id, fp) != within.event_id


def test_the_settings_fingerprint_names_the_settings() -> None:
    base = CompareConfig.build(0.01, 0.02, ["output_snapshot.a"], "first")
    assert base.fingerprint() == CompareConfig.build(0.01, 0.02, ["output_snapshot.a"], "first").fingerprint()
    others = [
        CompareConfig.build(0.02, 0.02, ["output_snapshot.a"], "first"),
        CompareConfig.build(0.01, 0.03, ["output_snapshot.a"], "first"),
        CompareConfig.build(0.01, 0.02, ["output_snapshot.b"], "first"),
        CompareConfig.build(0.01, 0.02, ["output_snapshot.a"], "previous"),
    ]
    assert len({base.fingerprint(), *(c.fingerprint() for c in others)}) == 5
    assert len(base.fingerprint()) == 16
