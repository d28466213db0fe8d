"""Noise envelopes: the sketches merge exactly, an envelope learned in batches (stored
and read back between them) is the one learned at once, the adaptive judgment of a
zero-configuration fleet keeps false alerts and misses under their goals, and a
sustained regression is never learned as normal."""

from __future__ import annotations

import itertools
import json
import zlib
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replaywatch.compare import CompareConfig, Comparison, Verdict, compare_attempts
from replaywatch.core.projection import StepProjection, apply
from replaywatch.envelope.adaptive import ADAPTIVE, WARMUP, Action, Adaptive, EnvelopeKey
from replaywatch.envelope.cohort import POOLED, cohort_of, kind_of
from replaywatch.envelope.model import CohortEnvelope, EnvelopeSettings, learn
from replaywatch.envelope.observe import observe
from replaywatch.envelope.sketch import Histogram
from tests.corpus import REGRESSIONS, Rerun, cohort_fleet

ADAPTIVE_DEFAULT = replace(CompareConfig(), adaptive=True)
values = st.floats(min_value=0, max_value=1e6, allow_nan=False)


@given(st.lists(values), st.lists(values), st.sampled_from(["score", "delta"]))
def test_histograms_merge_exactly(a: list[float], b: list[float], scale: str) -> None:
    ha, hb, both = Histogram(scale), Histogram(scale), Histogram(scale)
    for v in a:
        ha.add(v)
        both.add(v)
    for v in b:
        hb.add(v)
        both.add(v)
    assert ha.merge(hb) == both == hb.merge(ha)
    assert Histogram.from_json(scale, json.loads(json.dumps(both.to_json()))) == both


@given(st.lists(st.floats(min_value=0, max_value=1), min_size=1), st.integers(1, 499))
def test_the_low_quantile_leaves_at_most_its_share_below(scores: list[float], per_mille: int) -> None:
    h = Histogram("score")
    for v in scores:
        h.add(v)
    low, high = h.low(per_mille), h.high(per_mille)
    assert low is not None and high is not None
    assert sum(v < low for v in scores) * 1000 <= per_mille * len(scores)
    assert sum(v > high for v in scores) * 1000 <= per_mille * len(scores)


def _comparisons(r: Rerun, adaptive: Adaptive) -> list[Comparison]:
    proj = StepProjection.empty(r.baseline.run_id, r.baseline.step_id)
    out: list[Comparison] = []
    for n, a in enumerate((r.baseline, r.current)):
        proj, cs = apply(proj, a, ADAPTIVE_DEFAULT, adaptive.of((0, 10**6 + n), a))
        out += cs
    return out


def _walk(fleet: list[Rerun], adaptive: Adaptive, partition_of: dict[str, int],
          offsets: dict[int, int] | None = None) -> list[tuple[str, str]]:  # fmt: skip
    """Each comparison's (verdict, regime), the fleet applied in order; ``offsets``:
    each partition's next offset (counted on)."""
    offsets = {} if offsets is None else offsets
    out = []
    for r in fleet:
        proj = StepProjection.empty(r.baseline.run_id, r.baseline.step_id)
        part = partition_of[r.baseline.step_id]
        for a in (r.baseline, r.current):
            offset = offsets.get(part, 0)
            offsets[part] = offset + 1
            proj, cs = apply(proj, a, ADAPTIVE_DEFAULT, adaptive.of((part, offset), a))
            out += [(c.verdict.value, c.regime or "") for c in cs]
    return out


SMALL = EnvelopeSettings(warmup=8)
SMALL_FLEET = cohort_fleet(kinds=2, warm=12, mixed=8, seed=3)
PARTITION_OF = {r.baseline.step_id: i % 2 for i, r in enumerate(SMALL_FLEET)}


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, len(SMALL_FLEET) - 1), max_size=6))
def test_envelopes_learned_in_batches_equal_those_learned_at_once(cuts: list[int]) -> None:
    """Incremental == batch: the fleet cut into batches, each batch's envelopes stored as
    JSON and read back for the next (as PostgreSQL holds them), gives the same verdicts
    and the same envelopes as one pass."""
    once = Adaptive({}, SMALL)
    expected = _walk(SMALL_FLEET, once, PARTITION_OF)
    stored: dict[EnvelopeKey, str] = {}
    got = []
    offsets: dict[int, int] = {}
    bounds = [0, *sorted(set(cuts)), len(SMALL_FLEET)]
    for start, end in itertools.pairwise(bounds):
        batch = Adaptive({k: CohortEnvelope.from_json(v) for k, v in stored.items()}, SMALL)
        got += _walk(SMALL_FLEET[start:end], batch, PARTITION_OF, offsets)
        stored.update((k, e.to_json()) for k, e in batch.changed.items())
    assert got == expected
    assert stored == {k: e.to_json() for k, e in once.changed.items()}


def test_learning_is_a_sum_of_counts() -> None:
    """Two envelopes learned from two halves merge into the one learned from all."""
    pairs = [(r.baseline, r.current) for r in cohort_fleet(kinds=1, warm=20, mixed=0, seed=9)]
    config = CompareConfig()
    from replaywatch.compare import prepare

    obs = [observe(prepare(1, b.output_snapshot, b.tool_events, config), prepare(2, c.output_snapshot,
                                                                                    c.tool_events, config))
           for b, c in pairs]  # fmt: skip
    whole, left, right = CohortEnvelope(), CohortEnvelope(), CohortEnvelope()
    for i, o in enumerate(obs):
        learn(whole, o, SMALL)
        learn(left if i % 2 else right, o, SMALL)
    assert left.merge(right).to_json() == whole.to_json()


def _quality(fleet: list[Rerun], config: CompareConfig) -> tuple[float, float, int, int]:
    """(false alerts after warm-up, share of regressions caught, benign judged, regressions)."""
    adaptive = Adaptive({}, EnvelopeSettings())
    partition_of = {r.baseline.step_id: zlib.crc32(r.baseline.step_id.encode()) % 2 for r in fleet}
    false = benign = caught = regressions = 0
    for r, (verdict, regime) in zip(fleet, _walk(fleet, adaptive, partition_of), strict=True):
        alert = verdict != Verdict.WITHIN_TOLERANCE.value
        if r.label in REGRESSIONS:
            regressions += 1
            caught += alert
        elif regime == ADAPTIVE:
            benign += 1
            false += alert
    return false / benign, caught / regressions, benign, regressions


def test_a_zero_configuration_fleet_is_judged_within_the_goals() -> None:
    """Ten step kinds over three providers, 70 benign re-runs of each first (about 35
    per cohort in each of two partitions), then regressions among benign re-runs:
    adaptive mode on the default policy and nothing else configured. Beside it, the
    same pairs under exact equality."""
    for seed in (1, 4):
        fleet = cohort_fleet(kinds=10, warm=70, mixed=20, seed=seed)
        false, recall, benign, regressions = _quality(fleet, ADAPTIVE_DEFAULT)
        assert benign > 500 and regressions > 150
        assert false <= 0.02 and recall >= 0.95, (seed, false, recall)
        benign_mixed = [r for r in fleet if r.phase == "mixed" and r.label not in REGRESSIONS]
        noisy = sum(compare_attempts(r.baseline, r.current, CompareConfig()).verdict is not Verdict.WITHIN_TOLERANCE
                    for r in benign_mixed)  # fmt: skip
        assert noisy > 0.9 * len(benign_mixed)


def test_a_sustained_regression_is_not_learned_as_normal() -> None:
    """After the warm-up, every re-run of a cohort collapses its confidence: each one is
    drift, naming the envelope, and the envelope learns none of them."""
    fleet = cohort_fleet(kinds=1, warm=40, mixed=0, seed=2)
    regressed = [r for r in cohort_fleet(kinds=1, warm=0, mixed=120, seed=8, regression_share=1.0)
                 if r.label == "confidence_collapsed"]  # fmt: skip
    adaptive = Adaptive({}, EnvelopeSettings())
    partition_of = {r.baseline.step_id: 0 for r in fleet + regressed}
    _walk(fleet, adaptive, partition_of)
    learned = {k: e.learned for k, e in adaptive.changed.items()}
    assert regressed
    out = _walk(regressed, adaptive, partition_of)
    assert out == [("drift", ADAPTIVE)] * len(regressed)
    assert {k: e.learned for k, e in adaptive.changed.items() if k in learned} == learned


def test_the_warm_up_is_the_configured_rules_and_says_so() -> None:
    fleet = cohort_fleet(kinds=1, warm=4, mixed=0, seed=2)
    out = _walk(fleet, Adaptive({}, EnvelopeSettings()), {r.baseline.step_id: 0 for r in fleet})
    exact = [compare_attempts(r.baseline, r.current, CompareConfig()).verdict.value for r in fleet]
    assert out == [(v, WARMUP) for v in exact]


def test_cohorts_are_bounded_and_pooled(caplog: pytest.LogCaptureFixture) -> None:
    adaptive = Adaptive({}, replace(EnvelopeSettings(), max_cohorts=2))
    fleet = cohort_fleet(kinds=2, warm=2, mixed=0, seed=1)  # six cohorts
    _walk(fleet, adaptive, {r.baseline.step_id: 0 for r in fleet})
    assert len(adaptive.changed) == 3 and (0, POOLED) in adaptive.changed
    assert len(caplog.records) == 1 and "REPLAYWATCH_MAX_COHORTS" in caplog.records[0].message


def test_the_kind_is_read_from_the_spec_and_never_fails() -> None:
    assert kind_of('{"type": "refund", "name": "x"}', "type") == "refund"
    assert kind_of('{"meta": {"kind": 7}}', "meta.kind") == "7"
    for spec in (None, "", "not json", "[1]", '{"type": {"a": 1}}', '{"type": ""}'):
        assert kind_of(spec, "type") is None
    assert cohort_of("openai", None, None, "llm-steps") == "openai|-|llm-steps"
    assert cohort_of(None, "v1", "refund", "default") == "-|v1|refund"


def test_the_event_names_the_regime_the_cohort_and_the_envelope_crossed() -> None:
    from replaywatch import codec

    fleet = cohort_fleet(kinds=1, warm=40, mixed=0, seed=2)
    adaptive = Adaptive({}, EnvelopeSettings())
    _walk(fleet, adaptive, {r.baseline.step_id: 0 for r in fleet})
    regressed = next(r for r in cohort_fleet(kinds=1, warm=0, mixed=60, seed=8, regression_share=1.0)
                     if r.label == "dangerous_tool")  # fmt: skip
    (c,) = [c for c in _comparisons(regressed, adaptive)]
    event = codec.decode_comparison(codec.encode_comparison(codec.comparison_record(
        c, diff_uri=None, source=("in", 0, 1), occurred_at_ms=1, detected_at_ms=2)))  # fmt: skip
    assert event["verdict"] == "tool_event_divergence" and event["regime"] == ADAPTIVE
    assert event["cohort"] == f"{regressed.provider}|-|kind-0"
    assert (event["envelope"], event["envelope_path"]) == ("tool_never_called", "delete_account")
    assert any("delete_account" in text for text in event["envelopes_crossed"])
    assert c.diff is not None and b"delete_account" in c.diff.body


def test_a_reset_applies_from_its_offsets_and_a_replay_applies_it_at_the_same_records() -> None:
    """A reset taken when partition 0 had committed offset ``at``: the records before it
    are judged by the old envelope, those from it on warm up again; a pass from the
    beginning that knows the action gives the same verdicts, whatever the batches."""
    fleet = cohort_fleet(kinds=1, warm=40, mixed=30, seed=6)
    partition_of = {r.baseline.step_id: 0 for r in fleet}
    at = 2 * len([r for r in fleet if r.phase == "warm"]) + 10
    action = Action(1, "reset", "*|kind-0", {0: at})
    live = Adaptive({}, EnvelopeSettings())
    before = _walk(fleet, live, partition_of)
    again = Adaptive({}, EnvelopeSettings(), [action])
    after = _walk(fleet, again, partition_of)
    cut = at // 2  # comparisons before the action's offset (two records a step)
    assert after[:cut] == before[:cut]
    assert {regime for _, regime in after[cut : cut + 20]} == {WARMUP} != {regime for _, regime in before[cut:]}
    assert all(e.action == 1 for e in again.changed.values())
    stored: dict[EnvelopeKey, str] = {}
    offsets: dict[int, int] = {}
    got = []
    for start in range(0, len(fleet), 17):
        batch = Adaptive({k: CohortEnvelope.from_json(v) for k, v in stored.items()}, EnvelopeSettings(), [action])
        got += _walk(fleet[start : start + 17], batch, partition_of, offsets)
        stored.update((k, e.to_json()) for k, e in batch.changed.items())
    assert got == after
    assert not Action(2, "reset", "openai|*", {0: 0}).applies("anthropic|-|kind-0", 0, 5)


def test_relearn_takes_a_shift_as_the_new_normal() -> None:
    """After the warm-up every re-run collapses its confidence: drift, and never learned.
    Relearned, the cohort warms up on the new behaviour and then finds it normal."""
    warm = [r for r in cohort_fleet(kinds=1, warm=40, mixed=0, seed=2) if r.provider == "openai"]
    shifted = [r for r in cohort_fleet(kinds=1, warm=0, mixed=800, seed=8, regression_share=1.0)
               if r.label == "confidence_collapsed" and r.provider == "openai"]  # fmt: skip
    assert len(shifted) > 60
    partition_of = {r.baseline.step_id: 0 for r in warm + shifted}
    adaptive = Adaptive({}, EnvelopeSettings())
    offsets: dict[int, int] = {}
    _walk(warm, adaptive, partition_of, offsets)
    first = _walk(shifted[:10], adaptive, partition_of, offsets)
    assert first == [("drift", ADAPTIVE)] * 10
    relearned = Adaptive(dict(adaptive.changed), EnvelopeSettings(), [Action(7, "relearn", "*", {0: offsets[0]})])
    during = _walk(shifted[10:40], relearned, partition_of, offsets)
    assert {regime for _, regime in during} == {WARMUP}
    later = _walk(shifted[40:], relearned, partition_of, offsets)
    assert later and later[-10:] == [("within_tolerance", ADAPTIVE)] * 10


def test_the_volatility_report_fits_80_columns_and_its_suggestion_is_a_policy_that_holds() -> None:
    """The flakiest cohorts first, at 80 columns; the rule suggested for each parses as a
    policy, and on the re-runs the cohort learned it keeps false alerts under the target."""
    import io
    import tomllib

    from rich.console import Console

    from replaywatch.compare import policy
    from replaywatch.envelope.volatility import by_cohort, suggest, toml_rule
    from replaywatch.views.volatility import volatility_table

    fleet = cohort_fleet(kinds=3, warm=60, mixed=0, seed=4)
    adaptive = Adaptive({}, EnvelopeSettings())
    _walk(fleet, adaptive, {r.baseline.step_id: i % 2 for i, r in enumerate(fleet)})
    rows = by_cohort(adaptive.changed)
    assert len(rows) == 9 and [v.flake_rate for v in rows] == sorted((v.flake_rate for v in rows), reverse=True)
    out = io.StringIO()
    Console(file=out, width=80).print(volatility_table(rows, 3, 80))
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80 and sum("kind-" in line for line in lines) == 9
    text = "".join(toml_rule(suggest(v, 0.02), f"cohort {v.cohort}") for v in rows)
    config = policy.parse(tomllib.loads(text), CompareConfig())
    benign = [r for r in fleet if r.label not in REGRESSIONS]
    false = sum(compare_attempts(r.baseline, r.current, config).verdict is not Verdict.WITHIN_TOLERANCE for r in benign)
    assert false <= 0.02 * len(benign)
    exact = sum(compare_attempts(r.baseline, r.current, CompareConfig()).verdict is not Verdict.WITHIN_TOLERANCE
                for r in benign)  # fmt: skip
    assert exact > 0.5 * len(benign)


def test_a_path_under_a_text_comparator_is_learned_by_its_score() -> None:
    """Where the policy scores a text (``text``, ``words``, ``semantic``), the envelope
    learns that score; elsewhere the ``words`` similarity."""
    from replaywatch.compare import prepare
    from replaywatch.compare.comparators import Comparator, words_similarity
    from replaywatch.compare.graded import PathComparators

    before = {"answer": "the refund is approved today", "note": "the refund is approved today"}
    after = {"answer": "today approved is refund the", "note": "today approved is refund the"}
    config = CompareConfig()
    comparators = PathComparators.compile([("output_snapshot.answer", Comparator("text"))])
    obs = observe(prepare(1, before, None, config), prepare(2, after, None, config), comparators)
    scores = {c.path: c.figure for c in obs.paths}
    levenshtein = Comparator("text")(before["answer"], after["answer"]).score
    assert scores == {"/answer": levenshtein, "/note": words_similarity(before["note"], after["note"])}
    assert levenshtein < 0.9 and scores["/note"] == 1.0
