"""The projection: incremental, order-insensitive, idempotent, bounded."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from replaywatch.compare import ABSENT, Attempt, CompareConfig, PreparedAttempt, compare, prepare
from replaywatch.compare.engine import Verdict, prepared_under, unprepared
from replaywatch.core.projection import StepProjection, apply, replay_step
from replaywatch.store.postgres import _attempt_from, _attempt_json, _pair_from

from .strategies import json_values, snapshots

CONFIGS = st.builds(
    CompareConfig.build,
    tokens_tolerance=st.sampled_from([0.0, 0.01, 0.5]),
    cost_tolerance=st.sampled_from([0.0, 0.01]),
    ignore=st.sampled_from([(), ("**.id",), ("tool_events[*].trace",)]),
    base=st.sampled_from(["first", "previous"]),
)


@st.composite
def attempt_streams(draw: st.DrawFn) -> tuple[list[Attempt], list[Attempt]]:
    """Distinct attempts of one step, and an arrival order with duplicates."""
    numbers = draw(st.lists(st.integers(0, 20), min_size=1, max_size=7, unique=True))
    distinct = []
    for n in numbers:
        snap = draw(st.one_of(st.none(), snapshots, st.just({"tokens": 1, "attestation_ids": ["a"]})))
        tools = draw(st.one_of(st.just(ABSENT), json_values))
        distinct.append(Attempt("run", "step", n, snap, tool_events=tools, event_id=f"e{n}"))
    arrivals = draw(st.lists(st.sampled_from(distinct), min_size=len(distinct), max_size=len(distinct) * 2))
    missing = [a for a in distinct if a not in arrivals]
    order = draw(st.permutations(arrivals + missing))
    return distinct, list(order)


def run(events: list[Attempt], config: CompareConfig) -> tuple[StepProjection, list]:  # type: ignore[type-arg]
    proj = StepProjection.empty("run", "step")
    emitted: list[Any] = []
    for e in events:
        proj, out = apply(proj, e, config)
        assert len(out) <= 1
        emitted.extend(out)
    return proj, emitted


@settings(max_examples=2000)
@given(attempt_streams(), CONFIGS)
def test_final_verdict_equals_the_batch_oracle(stream, config: CompareConfig) -> None:  # type: ignore[no-untyped-def]
    distinct, order = stream
    proj, emitted = run(order, config)
    with_snapshot = [a for a in distinct if a.output_snapshot is not None]
    assert proj.max_attempt == max(a.number for a in distinct)
    if not with_snapshot:
        assert proj.baseline is None and proj.current is None and emitted == []
        return
    oracle = replay_step(distinct, config)
    assert proj.baseline is not None and proj.current is not None
    # the step may keep its current without its compared forms: made again to compare it
    final = compare("run", "step", prepared_under(proj.baseline, config), prepared_under(proj.current, config), config)
    assert final == oracle
    if proj.baseline.number != proj.current.number:
        assert emitted[-1] == oracle
        assert proj.last_verdict == oracle.verdict
    else:
        assert oracle.verdict is Verdict.WITHIN_TOLERANCE
    # no pair is compared twice: event ids are unique
    ids = [c.event_id for c in emitted]
    assert len(ids) == len(set(ids))


@settings(max_examples=500)
@given(snapshots, st.one_of(st.just(ABSENT), json_values), CONFIGS, st.one_of(st.none(), st.floats(0, 1e6)))
def test_an_unprepared_attempt_is_prepared_again_to_the_same_forms(snap, tools, config: CompareConfig,  # type: ignore[no-untyped-def]
                                                                   latency) -> None:  # fmt: skip
    p = prepare(3, snap, tools, config, latency)
    kept = unprepared(p)
    assert kept.structure_fp == b"" and kept.tool_fp is None and kept.prepared_with != config.prep_key
    assert (kept.snapshot_json, kept.tools_json) == (p.snapshot_json, p.tools_json)  # the stored row's parts
    assert prepared_under(kept, config) == p
    assert _attempt_from(_attempt_json(p), None) == kept  # read back from its row: the same, without the work


@settings(max_examples=300)
@given(attempt_streams(), CONFIGS)
def test_a_stored_step_is_read_back_as_apply_keeps_it(stream, config: CompareConfig) -> None:  # type: ignore[no-untyped-def]
    _, order = stream
    proj, _ = run(order, config)
    baseline, current = _pair_from(_attempt_json(proj.baseline), _attempt_json(proj.current), config)
    assert (baseline, current) == (proj.baseline, proj.current)
    assert (baseline is current) is (proj.baseline is proj.current)


@settings(max_examples=300)
@given(snapshots, snapshots, st.sampled_from(["first", "previous"]))
def test_the_base_first_keeps_its_current_without_compared_forms(a, b, base) -> None:  # type: ignore[no-untyped-def]
    config = CompareConfig.build(base=base)
    proj, out = run([Attempt("run", "step", 1, a, event_id="e1"), Attempt("run", "step", 2, b, event_id="e2")], config)
    assert len(out) == 1 and proj.baseline is not None and proj.current is not None
    assert proj.baseline.prepared_with == config.prep_key  # compared with the next attempt
    # "previous" compares the next attempt with this current: it stays prepared
    assert (proj.current.prepared_with == config.prep_key) is (base == "previous")


@settings(max_examples=2000)
@given(attempt_streams(), CONFIGS)
def test_reapplying_changes_nothing(stream, config: CompareConfig) -> None:  # type: ignore[no-untyped-def]
    _, order = stream
    proj, _ = run(order, config)
    for e in order:
        again, out = apply(proj, e, config)
        assert out == ()
        assert again == proj


@settings(max_examples=1000)
@given(attempt_streams(), CONFIGS)
def test_comparisons_are_a_function_of_baseline_current_and_config(stream, config: CompareConfig) -> None:  # type: ignore[no-untyped-def]
    distinct, order = stream
    by_number = {a.number: a for a in distinct}
    _, emitted = run(order, config)
    for c in emitted:
        b, k = by_number[c.baseline_attempt], by_number[c.current_attempt]
        fresh = compare(
            "run",
            "step",
            prepare(b.number, b.output_snapshot, b.tool_events, config),
            prepare(k.number, k.output_snapshot, k.tool_events, config),
            config,
        )
        assert fresh == c


@given(attempt_streams(), CONFIGS)
def test_state_is_bounded_to_a_pair(stream, config: CompareConfig) -> None:  # type: ignore[no-untyped-def]
    _, order = stream
    proj, _ = run(order + order, config)
    held = [name for name, v in proj._asdict().items() if isinstance(v, PreparedAttempt)]
    assert set(held) <= {"baseline", "current"}  # nothing else holds attempts


def test_first_base_keeps_the_lowest_attempt() -> None:
    cfg = CompareConfig()
    p = StepProjection.empty("run", "step")
    p, out = apply(p, Attempt("run", "step", 2, {"m": 2}), cfg)
    assert out == ()
    p, out = apply(p, Attempt("run", "step", 3, {"m": 3}), cfg)
    assert [(c.baseline_attempt, c.current_attempt) for c in out] == [(2, 3)]
    p, out = apply(p, Attempt("run", "step", 1, {"m": 1}), cfg)  # late baseline
    assert [(c.baseline_attempt, c.current_attempt) for c in out] == [(1, 3)]
    p, out = apply(p, Attempt("run", "step", 2, {"m": 2}), cfg)  # in the middle: nothing
    assert out == ()


def test_previous_base_compares_neighbours() -> None:
    cfg = CompareConfig.build(base="previous")
    p = StepProjection.empty("run", "step")
    pairs = []
    for n in (1, 2, 4, 3):
        p, out = apply(p, Attempt("run", "step", n, {"m": n}), cfg)
        pairs += [(c.baseline_attempt, c.current_attempt) for c in out]
    assert pairs == [(1, 2), (2, 4), (3, 4)]


def test_attempts_without_snapshot_still_count() -> None:
    cfg = CompareConfig()
    p = StepProjection.empty("run", "step")
    p, out = apply(p, Attempt("run", "step", 1, None, status="failed"), cfg)
    assert out == () and p.max_attempt == 1 and p.last_status == "failed" and not p.has_snapshot
