"""Alerts on drift rates: each cohort's final window tested against its reference,
corrected across cohorts, opened and resolved. Pure.

For each alert window (``alert_width_ms``), once it is final:

1. **Reference.** A cohort's own trailing windows (the last ``reference_windows``
   judged while no alert of its was open), once they hold ``min_reference``
   comparisons. A cohort without enough history of its own whose provider has an
   earlier version on the same step kind and policy is compared with that version
   instead (the most recently active one): the alert says which version, and on which
   step kinds the new version is compared with it.
2. **Test.** One-sided (the window drifts more than its reference): the two-proportion
   z-test when every count expected at the reference's rate is at least 5 (its tail
   from the standard library's ``NormalDist``), else Fisher's exact test (scipy). The
   choice does not depend on the window's own count, so that a window that drifts more
   never tests as less significant.
3. **Correction.** Benjamini-Hochberg across the cohorts tested in the window; a
   cohort's q-value is its adjusted p-value.
4. **Opening.** q <= ``alpha``, at least ``min_comparisons`` comparisons, the rate at
   least ``min_ratio`` times the reference's and ``min_difference`` above it, and no
   alert of the cohort open or cooling down. One alert per cohort is open at a time.
5. **Resolving.** After ``resolve_windows`` windows in a row with enough comparisons
   whose rate is no longer above the reference (one-sided p > ``HOLD_P``), or
   ``quiet_windows`` windows with none. Then the cohort cools down for
   ``cooldown_windows`` windows, in which no alert of it opens.

Windows judged while an alert is open do not join the cohort's reference: a lasting
change is not learned as normal while it is alerted on.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Final, Literal

from replaywatch.rates.tally import RatesSettings

STANDARD_NORMAL: Final = NormalDist()
HOLD_P: Final = 0.05
"""An open alert holds while its cohort's window is still above the reference at this level."""
ALERTS: Final = uuid.UUID("8d3c2e57-3b0e-4d43-9a0e-0c2a77d1f1a5")
Status = Literal["quiet", "open", "cooling"]
Cohort = tuple[str, str]
"""(cohort, policy)."""


def p_greater(drifted: int, n: int, ref_drifted: int, ref_n: int) -> float:
    """The one-sided p-value that a window's drift rate exceeds its reference's."""
    if n == 0 or ref_n == 0:
        return 1.0
    pooled = (drifted + ref_drifted) / (n + ref_n)
    if pooled in (0.0, 1.0):
        return 1.0
    # which test: by the counts expected at the reference's rate, which do not move with
    # the window's own count (a choice by the pooled rate would switch tests between two
    # neighbouring counts, and a window that drifted more could test as less significant)
    rate = ref_drifted / ref_n
    expected = min(n * rate, n * (1 - rate), ref_n * rate, ref_n * (1 - rate))
    if expected >= 5:
        se = math.sqrt(pooled * (1 - pooled) * (1 / n + 1 / ref_n))
        return STANDARD_NORMAL.cdf(-(drifted / n - ref_drifted / ref_n) / se)
    import numpy  # only the closer judges: the other consumers never load scipy (70 MB)
    from scipy.stats import fisher_exact

    table = numpy.array([[drifted, n - drifted], [ref_drifted, ref_n - ref_drifted]])
    return float(fisher_exact(table, alternative="greater").pvalue)


def parts(cohort: str) -> tuple[str, str, str]:
    """(provider, version, kind) of a cohort name (``envelope.cohort``)."""
    provider, _, rest = cohort.partition("|")
    version, _, kind = rest.partition("|")
    return provider, version, kind


@dataclass
class CohortState:
    ref: list[tuple[int, int]] = field(default_factory=list)
    """(comparisons, drifted) of the trailing windows judged while no alert was open."""
    status: Status = "quiet"
    alert_id: str | None = None
    opened_ms: int | None = None
    calm: int = 0
    idle: int = 0
    cooling_until_ms: int | None = None
    last_active_ms: int | None = None
    last: dict[str, Any] | None = None
    """The last window judged: what the fleet page sorts by."""

    @property
    def ref_totals(self) -> tuple[int, int]:
        return sum(n for n, _ in self.ref), sum(d for _, d in self.ref)

    def to_json(self) -> dict[str, Any]:
        return {
            "ref": [list(r) for r in self.ref], "status": self.status, "alert_id": self.alert_id,
            "opened_ms": self.opened_ms, "calm": self.calm, "idle": self.idle,
            "cooling_until_ms": self.cooling_until_ms, "last_active_ms": self.last_active_ms, "last": self.last,
        }  # fmt: skip

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CohortState:
        return cls(
            ref=[(int(n), int(k)) for n, k in d.get("ref", [])], status=d.get("status", "quiet"),
            alert_id=d.get("alert_id"), opened_ms=d.get("opened_ms"), calm=int(d.get("calm", 0)),
            idle=int(d.get("idle", 0)), cooling_until_ms=d.get("cooling_until_ms"),
            last_active_ms=d.get("last_active_ms"), last=d.get("last"),
        )  # fmt: skip


@dataclass(frozen=True)
class Transition:
    """An alert that opened or resolved at the end of a window."""

    kind: Literal["opened", "resolved"]
    alert_id: str
    cohort: str
    policy: str
    start_ms: int
    width_ms: int
    opened_ms: int
    evaluation: dict[str, Any]
    reason: str

    def data(self) -> dict[str, Any]:
        provider, version, kind = parts(self.cohort)
        return {
            "alert_id": self.alert_id, "status": "open" if self.kind == "opened" else "resolved",
            "cohort": self.cohort, "provider": provider, "provider_version": version, "kind": kind,
            "policy": self.policy, "opened_window_start_ms": self.opened_ms, "window_start_ms": self.start_ms,
            "window_end_ms": self.start_ms + self.width_ms, "reason": self.reason, **self.evaluation,
        }  # fmt: skip


@dataclass(frozen=True)
class _Test:
    key: Cohort
    n: int
    drifted: int
    ref_n: int
    ref_drifted: int
    reference: dict[str, Any]
    p: float

    @property
    def rate(self) -> float:
        return self.drifted / self.n

    @property
    def ref_rate(self) -> float:
        return self.ref_drifted / self.ref_n

    def effect(self, s: RatesSettings) -> bool:
        rate, ref = self.rate, self.ref_rate
        return self.n >= s.min_comparisons and rate - ref >= s.min_difference and rate >= s.min_ratio * ref


def _reference(key: Cohort, states: Mapping[Cohort, CohortState], s: RatesSettings) -> dict[str, Any] | None:
    own = states.get(key)
    if own is not None:
        n, d = own.ref_totals
        if n >= s.min_reference:
            return {"reference": "trailing", "reference_windows": len(own.ref), "ref_n": n, "ref_drifted": d}
    provider, version, kind = parts(key[0])
    earlier = []
    for (cohort, policy), st in states.items():
        p, v, k = parts(cohort)
        n, d = st.ref_totals
        if policy == key[1] and p == provider and k == kind and v != version and n >= s.min_reference:
            earlier.append((st.last_active_ms or 0, cohort, v, n, d))
    if not earlier:
        return None
    _, cohort, v, n, d = max(earlier)
    return {"reference": "previous_version", "compared_with_version": v, "compared_with_cohort": cohort,
            "ref_n": n, "ref_drifted": d}  # fmt: skip


def judge(
    states: dict[Cohort, CohortState], window: Mapping[Cohort, tuple[int, int]], start_ms: int, s: RatesSettings
) -> list[Transition]:
    """Judge the final alert window at ``start_ms``: ``window`` holds each cohort's
    (comparisons, drifted) in it. ``states`` changes in place; the alerts that open or
    resolve are returned, in cohort order."""
    for key in window:
        states.setdefault(key, CohortState())
    tests: list[_Test] = []
    for key in sorted(states):
        n, d = window.get(key, (0, 0))
        ref = _reference(key, states, s) if n else None
        if ref is not None:
            tests.append(_Test(key, n, d, ref["ref_n"], ref["ref_drifted"], ref, p_greater(d, n, ref["ref_drifted"],
                                                                                          ref["ref_n"])))  # fmt: skip
    from scipy.stats import false_discovery_control

    qs = [float(q) for q in false_discovery_control([t.p for t in tests], method="bh")] if tests else []
    evaluations = {t.key: (t, q) for t, q in zip(tests, qs, strict=True)}
    changed_versions = _version_kinds(evaluations, s)
    out: list[Transition] = []
    for key in sorted(states):
        st = states[key]
        n, d = window.get(key, (0, 0))
        found = evaluations.get(key)
        evaluation = _evaluation(found, n, d, start_ms, changed_versions)
        if n:
            st.last_active_ms = start_ms
            st.last = evaluation
        if st.status == "cooling" and st.cooling_until_ms is not None and start_ms >= st.cooling_until_ms:
            st.status, st.cooling_until_ms = "quiet", None
        if st.status == "open":
            out += _while_open(key, st, n, found, evaluation, start_ms, s)
        elif found is not None and found[0].effect(s) and found[1] <= s.alpha and st.status == "quiet":
            st.status, st.opened_ms, st.calm, st.idle = "open", start_ms, 0, 0
            st.alert_id = str(uuid.uuid5(ALERTS, f"{key[0]}\n{key[1]}\n{start_ms}"))
            out.append(Transition("opened", st.alert_id, key[0], key[1], start_ms, s.alert_width_ms, start_ms,
                                  evaluation, "drift rate above its reference"))  # fmt: skip
        if st.status != "open" and n:
            st.ref = [*st.ref, (n, d)][-s.reference_windows :]
    return out


def _while_open(
    key: Cohort, st: CohortState, n: int, found: tuple[_Test, float] | None, evaluation: dict[str, Any],
    start_ms: int, s: RatesSettings,
) -> list[Transition]:  # fmt: skip
    if n == 0:
        st.idle += 1
        reason = "no comparisons" if st.idle >= s.quiet_windows else None
    else:
        st.idle = 0
        if n >= s.min_comparisons:
            st.calm = 0 if found is not None and found[0].p <= HOLD_P else st.calm + 1
        reason = "drift rate back to its reference" if st.calm >= s.resolve_windows else None
    if reason is None:
        return []
    assert st.alert_id is not None and st.opened_ms is not None
    done = Transition("resolved", st.alert_id, key[0], key[1], start_ms, s.alert_width_ms, st.opened_ms,
                      evaluation, reason)  # fmt: skip
    st.status, st.alert_id, st.opened_ms, st.calm, st.idle = "cooling", None, None, 0, 0
    st.cooling_until_ms = start_ms + (s.cooldown_windows + 1) * s.alert_width_ms
    return [done]


def _version_kinds(evaluations: Mapping[Cohort, tuple[_Test, float]], s: RatesSettings) -> dict[Cohort, list[str]]:
    """For the cohorts compared with an earlier version: the step kinds on which their
    version is compared with that same version in this window."""
    groups: dict[tuple[str, str, str, str], list[str]] = {}
    for (cohort, policy), (t, _) in evaluations.items():
        if t.reference["reference"] == "previous_version":
            provider, version, kind = parts(cohort)
            groups.setdefault((provider, version, t.reference["compared_with_version"], policy), []).append(kind)
    out: dict[Cohort, list[str]] = {}
    for (cohort, policy), (t, _) in evaluations.items():
        if t.reference["reference"] == "previous_version":
            provider, version, _ = parts(cohort)
            out[(cohort, policy)] = sorted(groups[(provider, version, t.reference["compared_with_version"], policy)])
    return out


def _evaluation(
    found: tuple[_Test, float] | None, n: int, d: int, start_ms: int, kinds: Mapping[Cohort, list[str]]
) -> dict[str, Any]:
    out: dict[str, Any] = {"window_start_ms": start_ms, "comparisons": n, "drifted": d,
                           "rate": d / n if n else None}  # fmt: skip
    if found is None:
        return {**out, "reference": None}
    t, q = found
    ratio = t.rate / t.ref_rate if t.ref_rate else (math.inf if t.rate else 1.0)
    out |= {**t.reference, "reference_rate": t.ref_rate, "ratio": None if math.isinf(ratio) else ratio,
            "p_value": t.p, "q_value": q}  # fmt: skip
    if t.key in kinds:
        out["compared_kinds"] = kinds[t.key]
    return out
