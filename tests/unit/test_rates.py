"""Drift rates, pure: counting comparisons into windows (in any batching, with late
ones), closing and rolling windows up with versions, and the alert judgment: under the
null across seeds, and on a doubled rate."""

from __future__ import annotations

import itertools
import math

import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
from cloudevents.core.formats.json import JSONFormat
from hypothesis import example, given, settings
from hypothesis import strategies as st

from replaywatch.compare import CompareConfig, compare_attempts
from replaywatch.compare.engine import Attempt, Comparison
from replaywatch.rates.alerts import CohortState, Transition, judge, p_greater
from replaywatch.rates.closing import Rate, close, fleet_clock, pending, rollup
from replaywatch.rates.cloudevents import alert_message, comparison_headers
from replaywatch.rates.records import decode_rate, encode_rate
from replaywatch.rates.tally import COUNTERS, INDEX, LATE, Clock, RatesSettings, Windows, tally
from tests.rates_sim import Change, detection_delay, fleet

S = RatesSettings()
MINUTE = 60_000


def comparison(drifts: bool, tools: bool = False) -> Comparison:
    base = Attempt("r", "s", 1, {"a": 1}, [{"tool": "x"}])
    now = Attempt("r", "s", 2, {"a": 2} if drifts else {"a": 1},
                  [{"tool": "x"}, {"tool": "y"}] if tools else [{"tool": "x"}])  # fmt: skip
    return compare_attempts(base, now, CompareConfig())


SAME, DRIFT, TOOLS = comparison(False), comparison(True), comparison(False, tools=True)


def test_a_comparison_counts_its_verdict_and_the_causes_of_its_drift() -> None:
    assert tally(SAME) == [1, 1] + [0] * (len(COUNTERS) - 2)
    drift = tally(DRIFT)
    assert drift[INDEX["drift"]] == drift[INDEX["structure"]] == 1 and drift[INDEX["within_tolerance"]] == 0
    tools = tally(TOOLS)
    assert tools[INDEX["tool_event_divergence"]] == tools[INDEX["tool_added"]] == 1
    assert tools[INDEX["structure"]] == 0


events = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 30 * MINUTE), st.sampled_from(["a|1|k", "b|2|k"]), st.booleans()),
    max_size=60,
)


@given(events, st.lists(st.integers(1, 10), min_size=1, max_size=8))
@settings(max_examples=150, deadline=None)
def test_counting_in_batches_with_the_clocks_carried_over_equals_counting_at_once(
    items: list[tuple[int, int, str, bool]], cuts: list[int]
) -> None:
    whole = Windows(S, {})
    for p, t, cohort, drifts in items:
        whole.add(p, t, 0, cohort, "default", DRIFT if drifts else SAME)
    clocks: dict[int, Clock] = {}
    totals: dict[tuple[str, str, int], list[int]] = {}
    rest, i = list(items), 0
    while rest:
        n, i = cuts[i % len(cuts)], i + 1
        part, rest = rest[:n], rest[n:]
        stored = {p: Clock.from_json(c.to_json()) for p, c in clocks.items()}  # as PostgreSQL holds them
        w = Windows(S, stored)
        for p, t, cohort, drifts in part:
            w.add(p, t, 0, cohort, "default", DRIFT if drifts else SAME)
        clocks = {**clocks, **{p: w.clocks[p] for p in w.touched}}
        for k, c in w.deltas.items():
            totals[k] = [a + b for a, b in zip(totals.get(k, [0] * len(c)), c, strict=True)]
    assert totals == whole.deltas
    assert sum(c[0] + c[LATE] for c in totals.values()) == len(items)


def test_a_comparison_whose_window_closed_past_the_lateness_counts_as_late_only() -> None:
    w = Windows(S, {})
    w.add(0, 10 * MINUTE, 0, "c", "p", SAME)
    w.add(0, 10 * MINUTE - S.lateness_ms + 1, 0, "c", "p", DRIFT)  # its window is open
    w.add(0, 5 * MINUTE, 0, "c", "p", DRIFT)  # closed for good
    w.add(1, 5 * MINUTE, 0, "c", "p", DRIFT)  # another partition's clock is its own
    late = w.deltas[("c", "p", 5 * MINUTE)]
    assert late[LATE] == 1 and late[0] == 1
    assert w.deltas[("c", "p", 8 * MINUTE)][0] == 1


def test_a_record_stamped_far_in_the_future_cannot_make_the_rest_late() -> None:
    w = Windows(S, {})
    now = 100 * MINUTE
    w.add(0, now + 10**12, now, "c", "p", SAME)  # the year 2099, stamped now
    assert w.clocks[0].newest_ms == now + S.max_skew_ms
    w.add(0, now + 4 * MINUTE, now + 4 * MINUTE, "c", "p", SAME)  # within the skew and the lateness
    assert w.deltas[("c", "p", now + 4 * MINUTE)] == tally(SAME)


def test_cohorts_past_the_bound_pool() -> None:
    w = Windows(RatesSettings(max_cohorts=2), {})
    for cohort in ("a", "b", "c", "d", "a"):
        w.add(0, 0, 0, cohort, "p", SAME)
    assert {k[0] for k in w.deltas} == {"a", "b", "(pooled)"}
    assert w.deltas[("(pooled)", "p", 0)][0] == 2


def test_the_fleet_clock_waits_for_partitions_being_read_not_for_idle_ones() -> None:
    assert fleet_clock({}, [], S.idle_ms) is None
    assert fleet_clock({0: (100, 0.0), 1: (50, 1.0)}, [], S.idle_ms) == 50  # both counting
    assert fleet_clock({0: (100, 0.0), 1: (50, 3600.0)}, [], S.idle_ms) == 100  # 1 idle, read to its end
    assert fleet_clock({0: (100, 0.0), 1: (50, 3600.0)}, [1], S.idle_ms) == 50  # 1 has records waiting
    assert fleet_clock({0: (100, 0.0)}, [1], S.idle_ms) is None  # 1 waits and never counted: hold all
    assert fleet_clock({0: (100, 3600.0), 1: (50, 3600.0)}, [], S.idle_ms) == 100


def test_closed_windows_are_published_once_and_again_with_the_next_version_when_they_change() -> None:
    base = {("c", "p", m * MINUTE): [2, 1] + [0] * (len(COUNTERS) - 2) for m in range(10)}
    first = close(base, {}, 5 * MINUTE, S)
    assert {(r.width_ms, r.start_ms // MINUTE) for r in first} == {(MINUTE, m) for m in range(5)} | {(5 * MINUTE, 0)}
    assert all(r.version == 1 for r in first)
    published = {r.key: (r.version, r.counts) for r in first}
    assert close(base, published, 5 * MINUTE, S) == []
    base[("c", "p", 2 * MINUTE)][0] += 1  # a late comparison within the lateness
    again = close(base, published, 5 * MINUTE, S)
    assert {(r.width_ms, r.start_ms, r.version) for r in again} == {(MINUTE, 2 * MINUTE, 2), (5 * MINUTE, 0, 2)}
    assert rollup(base, 5 * MINUTE)[("c", "p", 5 * MINUTE, 5 * MINUTE)][0] == 10


def test_alert_windows_are_judged_once_final_in_order() -> None:
    w, late = S.alert_width_ms, S.lateness_ms
    assert pending(None, 0, 3 * w + late, S) == [0, w, 2 * w]
    assert pending(None, 0, 3 * w + late - 1, S) == [0, w]
    assert pending(w, 0, 3 * w + late, S) == [2 * w]
    assert pending(None, None, 10 * w, S) == []


@given(st.integers(1, 400), st.integers(1, 4000), st.floats(0.01, 0.9))
@example(10, 10, 0.75)  # by the pooled counts the test would be z at 3 drifted, Fisher's at 4
@settings(max_examples=200, deadline=None)
def test_the_p_value_is_a_probability_and_falls_as_the_window_drifts_more(n: int, ref_n: int, rate: float) -> None:
    ref_d = int(ref_n * rate)
    ps = [p_greater(d, n, ref_d, ref_n) for d in range(0, n + 1, max(1, n // 7))]
    assert all(0.0 <= p <= 1.0 for p in ps)
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(ps))


def test_more_drifted_never_tests_as_less_significant_on_small_counts() -> None:
    # every window and reference of up to 15 comparisons: where the test changes (z or
    # Fisher's) is where a p-value could rise with the count
    for n, ref_n in itertools.product(range(1, 16), repeat=2):
        for ref_d in range(ref_n + 1):
            ps = [p_greater(d, n, ref_d, ref_n) for d in range(n + 1)]
            assert all(a >= b - 1e-12 for a, b in itertools.pairwise(ps)), (n, ref_d, ref_n, ps)


def test_small_counts_use_an_exact_test() -> None:
    # 3 of 4 against 1 of 20: the normal approximation would say ~1e-4; Fisher's is ~0.005
    assert 0.001 < p_greater(3, 4, 1, 20) < 0.02
    assert p_greater(0, 10, 0, 100) == 1.0


def test_under_the_null_false_alerts_stay_under_one_per_thousand_cohort_windows() -> None:
    outcomes = [fleet(seed, cohorts=20, windows=288) for seed in range(4)]
    windows = sum(o.cohort_windows for o in outcomes)
    false = sum(o.false_alerts for o in outcomes)
    assert windows == 4 * 20 * 288
    assert false <= windows / 1000, (false, windows)


def test_a_doubled_rate_is_caught_within_two_windows_and_resolves_after_the_revert() -> None:
    change = Change(cohort=2, at=100, factor=2.0, until=140)
    delays = []
    for seed in range(6):
        outcome = fleet(seed, cohorts=6, windows=180, change=change, volume=(200, 400), rates=(0.08, 0.2))
        delays.append(detection_delay(outcome, change))
        until = change.until or 0
        resolved = [w for i, w in outcome.resolved if i == change.cohort and w >= until]
        assert resolved and resolved[0] <= until + 4, outcome.resolved
    assert all(d is not None and d <= 1 for d in delays), delays


def judged(states: dict[tuple[str, str], CohortState], windows: list[dict[tuple[str, str], tuple[int, int]]],
           s: RatesSettings = S) -> list[tuple[int, Transition]]:  # fmt: skip
    out = []
    for i, window in enumerate(windows):
        out += [(i, t) for t in judge(states, window, i * s.alert_width_ms, s)]
    return out


def test_one_alert_per_cohort_then_a_cooldown() -> None:
    key = ("openai|v1|plan", "default")
    steady = [{key: (200, 20)}] * 12
    high = [{key: (200, 80)}] * 3
    states: dict[tuple[str, str], CohortState] = {}
    out = judged(states, steady + high + steady[:2] + high + steady[:6] + high)
    kinds = [(i, t.kind) for i, t in out]
    # opened once while high (deduplicated), resolved after two calm windows; the next
    # high spell falls in the cooldown; the one after it opens again
    assert kinds == [(12, "opened"), (16, "resolved"), (26, "opened")], kinds


def test_a_new_provider_version_is_compared_with_the_previous_one_on_the_same_kinds() -> None:
    old_plan, old_chat = ("openai|v1|plan", "default"), ("openai|v1|chat", "default")
    new_plan, new_chat = ("openai|v2|plan", "default"), ("openai|v2|chat", "default")
    states: dict[tuple[str, str], CohortState] = {}
    judged(states, [{old_plan: (200, 20), old_chat: (200, 30)}] * 6)
    out = judge(states, {new_plan: (200, 60), new_chat: (200, 31)}, 6 * S.alert_width_ms, S)
    assert [(t.cohort, t.kind) for t in out] == [("openai|v2|plan", "opened")]
    data = out[0].data()
    assert data["reference"] == "previous_version" and data["compared_with_version"] == "v1"
    assert data["compared_kinds"] == ["chat", "plan"]
    assert data["provider_version"] == "v2" and data["kind"] == "plan"
    assert math.isclose(data["reference_rate"], 0.1)


def test_an_alert_is_a_cloudevent_the_sdk_decodes() -> None:
    key = ("openai|v1|plan", "default")
    states: dict[tuple[str, str], CohortState] = {}
    (_, opened), = judged(states, [{key: (200, 20)}] * 12 + [{key: (200, 80)}])  # fmt: skip
    k, value, headers = alert_message(opened, "/replaywatch/g/in", "http://rw")
    event = from_binary(KafkaMessage(dict(headers), k, value), JSONFormat())
    assert event.get_type() == "dev.replaywatch.alert.opened" and event.get_specversion() == "1.0"
    assert event.get_subject() == "openai|v1|plan#default" and k == b"openai|v1|plan"
    data = event.get_data()
    assert isinstance(data, dict) and data["status"] == "open" and data["comparisons"] == 200
    assert data["links"]["cohort"] == "http://rw/cohorts/openai%7Cv1%7Cplan"
    assert dict(headers)["content-type"] == b"application/json"
    again = alert_message(opened, "/replaywatch/g/in", "http://rw")
    assert again == (k, value, headers)  # the same transition is the same event


def test_comparison_headers_follow_the_binary_mode() -> None:
    headers = dict(comparison_headers("id-1", "drift", "run/step", 1_700_000_000_000, "/replaywatch/g/in"))
    assert headers["ce_id"] == b"id-1" and headers["ce_type"] == b"dev.replaywatch.comparison.drift"
    assert headers["ce_time"] == b"2023-11-14T22:13:20Z" and headers["content-type"] == b"application/avro"
    assert headers["ce_specversion"] == b"1.0" and headers["ce_subject"] == b"run/step"


@pytest.mark.parametrize("schema_id", [None, 7])
def test_a_rate_round_trips_through_avro(schema_id: int | None) -> None:
    counts = tuple([10, 7, 3, 0, 0, 3, 0, 0, 0, 0, 1, 0, 0, 2])
    rate = Rate("anthropic|claude-x|plan", "default", 300_000, 600_000, 2, counts)
    rec = decode_rate(encode_rate(rate, schema_id))
    assert rec["drift_rate"] == pytest.approx(0.3) and rec["version"] == 2 and rec["late"] == 2
    assert rec["provider"] == "anthropic" and rec["kind"] == "plan" and rec["width_seconds"] == 300
    assert rec["causes"] == {"structure": 3, "tool_added": 0, "tool_removed": 0, "tool_changed": 0,
                             "attestation": 0, "tokens": 1, "cost": 0, "latency": 0}  # fmt: skip


def test_the_gauges_keep_the_busiest_cohorts_and_sum_the_rest() -> None:
    from replaywatch.runtime.closer import gauges

    def state(i: int) -> CohortState:
        last = {"comparisons": 10 * (i + 1), "drifted": i, "rate": i / (10 * (i + 1)), "reference_rate": 0.05}
        return CohortState(status="open" if i == 7 else "quiet", last=last)

    states = {(f"p|v|k{i}", "default"): state(i) for i in range(8)}
    rows = gauges(states, 3)
    assert [r[0] for r in rows] == ["p|v|k7", "p|v|k6", "p|v|k5", "(other)"]
    assert rows[0][4] is True and rows[-1][4] is False
    rest = [(10 * (i + 1), i) for i in range(5)]
    assert rows[-1][2] == pytest.approx(sum(d for _, d in rest) / sum(n for n, _ in rest))
