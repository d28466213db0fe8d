"""The adaptive judgment of a batch's comparisons: each comparison under an adaptive
policy is judged against its cohort's envelope in its input partition, and teaches it.

Regimes:

- ``warmup``, until the envelope learned ``warmup`` comparisons: the configured rules
  decide. The envelope learns from what they pass; a policy with no comparators (exact
  equality) cannot tell noise from change, so under it the envelope learns from every
  comparison but an attestation divergence. Once it has learned half its warm-up, it
  no longer learns from a comparison whose scores, deltas or tools it already sees as
  far out (the widening of few samples included): a regression during the warm-up is
  not learned as normal;
- ``adaptive``: the envelope decides. A crossing of a tool envelope is a
  ``tool_event_divergence``, of any other a ``drift``; an attestation divergence stays
  one (attestation ids are evidence, never noise). The envelope learns only from the
  comparisons inside it, so a sustained shift is not learned as normal.

Envelopes are kept per input partition: Kafka orders records only within one, and
so a replay of the same offsets (a restart, a rebuild, a backfill into a fresh schema)
meets every comparison with the same envelope, and says the same.

Operators act on cohorts (``replaywatch baseline``): ``reset`` forgets a cohort's
envelopes, which warm up again as a new cohort's would; ``relearn`` forgets them and
learns the warm-up from every comparison but attestation divergences (the cohort
changed for good: a new model version, an accepted change). An action names the first
offset of each partition it applies from (the offsets committed when it was taken), so
that a replay applies it at the same records.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any, NamedTuple

from replaywatch.compare import structure, tool_changes
from replaywatch.compare.canonical import parse_json
from replaywatch.compare.engine import (
    ABSENT,
    Attempt,
    CompareConfig,
    Comparison,
    Diff,
    DiffKind,
    PreparedAttempt,
    Verdict,
)
from replaywatch.compare.graded import PathResult
from replaywatch.compare.tool_changes import NO_CHANGES, ToolCounts
from replaywatch.compare.trajectory import Trajectory
from replaywatch.envelope.cohort import POOLED, cohort_of
from replaywatch.envelope.model import CohortEnvelope, Crossing, EnvelopeSettings, count, judge, learn
from replaywatch.envelope.observe import TOOLS, Observation, observe

logger = logging.getLogger(__name__)
EnvelopeKey = tuple[int, str]
"""(input partition, cohort)."""
WARMUP = "warmup"
ADAPTIVE = "adaptive"


class Action(NamedTuple):
    """An operator's action on the cohorts a glob matches (``replaywatch baseline``)."""

    id: int
    kind: str
    """``reset`` or ``relearn``."""
    cohort: str
    """A glob of cohort names (``fnmatch``, case-sensitive): ``openai|*|refund``."""
    effective: Mapping[int, int]
    """Each partition's first offset it applies to (a partition not named: from 0)."""

    def applies(self, cohort: str, partition: int, offset: int) -> bool:
        return offset >= self.effective.get(partition, 0) and fnmatch.fnmatchcase(cohort, self.cohort)


class Adaptive:
    """One batch's envelopes: those it starts from (``known``: every cohort of the
    partitions it reads), changed in place as the batch's comparisons are judged in
    input order, and which it changed (``changed``: serialize them when the batch ends,
    before another batch changes them further)."""

    def __init__(
        self, known: MutableMapping[EnvelopeKey, CohortEnvelope], settings: EnvelopeSettings,
        actions: Sequence[Action] = (),
    ) -> None:  # fmt: skip
        self.known = known
        self.settings = settings
        self.actions = sorted(actions)
        self.changed: dict[EnvelopeKey, CohortEnvelope] = {}
        self._cohorts: dict[int, set[str]] = {}

    def _envelope(self, partition: int, offset: int, cohort: str) -> tuple[EnvelopeKey, CohortEnvelope]:
        cohorts = self._cohorts.get(partition)
        if cohorts is None:
            cohorts = self._cohorts[partition] = {c for p, c in (*self.known, *self.changed) if p == partition}
        if cohort not in cohorts:
            if len(cohorts) >= self.settings.max_cohorts:
                if (partition, POOLED) not in self.known:
                    logger.warning(
                        "partition %d holds %d cohorts (REPLAYWATCH_MAX_COHORTS): the attempts of %r and of any "
                        "further cohort share the cohort %r", partition, len(cohorts), cohort, POOLED,
                    )  # fmt: skip
                cohort = POOLED
            cohorts.add(cohort)
        key = (partition, cohort)
        env = self.known.get(key)
        if env is None:
            env = self.known[key] = CohortEnvelope()
        for action in self.actions:  # an operator's action, from its offset on
            if action.id > env.action and action.applies(cohort, partition, offset):
                env = self.known[key] = CohortEnvelope(action=action.id, relearning=action.kind == "relearn")
        self.changed[key] = env
        return key, env

    def of(self, source: tuple[int, int], attempt: Attempt) -> RecordJudge:
        """The judge of the comparison that the record at ``source`` (partition, offset) causes."""
        return RecordJudge(self, source, attempt)

    def resolve(self, source: tuple[int, int], attempt: Attempt, config: CompareConfig) -> tuple[str, CohortEnvelope]:
        """The cohort of the attempt at ``source`` and its envelope there (actions applied)."""
        (_, cohort), env = self._envelope(*source, cohort_of(attempt.provider, attempt.provider_version, attempt.kind,
                                                              config.policy))  # fmt: skip
        return cohort, env

    def judge(
        self, source: tuple[int, int], attempt: Attempt, c: Comparison, baseline: PreparedAttempt,
        current: PreparedAttempt, config: CompareConfig, found: tuple[str, CohortEnvelope] | None = None,
    ) -> Comparison:  # fmt: skip
        """The comparison that the record at ``source`` (partition, offset) caused, as
        its cohort's envelope judges it (see the module); the envelope learns from it or
        not. Once warm, ``c`` is the engine's lean comparison, completed here. ``found``:
        the cohort and envelope already resolved for it (``RecordJudge.decides``)."""
        if not config.adaptive:
            return c
        settings = self.settings
        cohort, env = found or self.resolve(source, attempt, config)
        obs = observe(baseline, current, config.comparators)
        if env.learned < settings.warmup:
            count(env, obs, False, settings)
            if env.relearning:
                teach = c.verdict is not Verdict.ATTESTATION_DIVERGENCE
            else:
                teach = _teaches(c, config) and not (
                    env.learned >= settings.warmup // 2 and _far(judge(env, obs, settings))
                )
            if teach:
                learn(env, obs, settings)
                env.relearning &= env.learned < settings.warmup
            return c._replace(regime=WARMUP, cohort=cohort)
        crossings = judge(env, obs, settings)
        count(env, obs, bool(crossings), settings)
        if c.verdict is Verdict.ATTESTATION_DIVERGENCE:
            verdict: Verdict = c.verdict
        elif any(x.tools for x in crossings):
            verdict = Verdict.TOOL_EVENT_DIVERGENCE
        elif crossings:
            verdict = Verdict.DRIFT
        else:
            verdict = Verdict.WITHIN_TOLERANCE
            learn(env, obs, settings)
        diff, changes = (c.diff, NO_CHANGES) if verdict is c.verdict else _diff(verdict, c, baseline, current,
                                                                                crossings)  # fmt: skip
        return _completed(c, verdict, diff, changes, cohort, obs, crossings)


class RecordJudge:
    """An ``Adaptive`` bound to one record: the ``core.projection.Judge`` of its comparison."""

    __slots__ = ("adaptive", "attempt", "found", "source")

    def __init__(self, adaptive: Adaptive, source: tuple[int, int], attempt: Attempt) -> None:
        self.adaptive, self.source, self.attempt = adaptive, source, attempt
        self.found: tuple[str, CohortEnvelope] | None = None

    def decides(self, config: CompareConfig) -> bool:
        """Whether the cohort's envelope decides (adaptive and warm): the engine then
        compares lean. The cohort resolved here serves the judgment that follows."""
        if not config.adaptive:
            return False
        self.found = self.adaptive.resolve(self.source, self.attempt, config)
        return self.found[1].learned >= self.adaptive.settings.warmup

    def __call__(
        self, c: Comparison, baseline: PreparedAttempt, current: PreparedAttempt, config: CompareConfig
    ) -> Comparison:
        return self.adaptive.judge(self.source, self.attempt, c, baseline, current, config, self.found)


def _completed(
    c: Comparison, verdict: Verdict, diff: Diff | None, changes: ToolCounts, cohort: str, obs: Observation,
    crossings: list[Crossing],
) -> Comparison:  # fmt: skip
    """A lean comparison as the envelope decided it: the verdict and its diff; the
    paths that crossed as the deciding paths (their envelope as comparator, the figure as
    score); the structure score, the lowest similarity of the texts that differ; the
    tool calls' precision and recall by the tools they name, and the tools added."""
    paths = tuple(PathResult(x.path, f"envelope:{x.envelope}", x.figure, f"limit {x.limit:g}", False)
                  for x in crossings if x.path.startswith("/") and not x.tools)  # fmt: skip
    scores = [p.figure for p in obs.paths if p.kind == "text" and p.figure is not None and not p.path.startswith(TOOLS)]
    before, now = obs.tools_before, obs.tools_now
    tools_crossed = any(x.tools for x in crossings)
    common = len(before & now)
    calls = Trajectory(not tools_crossed, common / len(now) if now else 1.0, common / len(before) if before else 1.0,
                       tuple(sorted(now - before)))  # fmt: skip
    return c._replace(verdict=verdict, diff=diff, regime=ADAPTIVE, cohort=cohort, crossings=tuple(crossings),
                      structure_equal=not paths, tool_events_equal=not tools_crossed, paths=paths,
                      structure_score=min(scores, default=1.0), tools=calls, tool_changes=changes)  # fmt: skip


STABILITY = frozenset({"stable_path", "shape_changed", "set_changed", "tool_set_changed"})


def _teaches(c: Comparison, config: CompareConfig) -> bool:
    """Whether a warm-up comparison may teach the envelope, by the configured rules:
    what they pass; under exact equality (no comparators), all but an attestation
    divergence."""
    if c.verdict is Verdict.ATTESTATION_DIVERGENCE:
        return False
    return not config.comparators or c.verdict is Verdict.WITHIN_TOLERANCE


def _far(crossings: list[Crossing]) -> bool:
    """Whether a half-learned envelope already sees a warm-up comparison as far out: a
    score, a delta or a tool beyond what it learned (its stability is not known yet)."""
    return any(x.envelope not in STABILITY for x in crossings)


def _diff(
    verdict: Verdict, c: Comparison, baseline: PreparedAttempt, current: PreparedAttempt, crossings: list[Crossing]
) -> tuple[Diff | None, ToolCounts]:
    """The diff of a verdict the envelope gave (the configured rules gave another), and
    the tool changes it counts."""
    envelope = [x.describe() for x in crossings]
    if verdict is Verdict.TOOL_EVENT_DIVERGENCE:
        before = None if baseline.tool_fp is None else parse_json(baseline.tool_fp)
        now = None if current.tool_fp is None else parse_json(current.tool_fp)
        changes = tool_changes.classify(before, now)
        payload: dict[str, Any] = {
            "run_id": c.run_id, "step_id": c.step_id,
            "recorded": None if baseline.tool_events is ABSENT else baseline.tool_events,
            "current": None if current.tool_events is ABSENT else current.tool_events,
            "changes": changes, "envelope": envelope,
        }  # fmt: skip
        return Diff.of(DiffKind.TOOL, payload), tool_changes.counts(changes)
    if verdict is Verdict.DRIFT and baseline.structure_fp != current.structure_fp:
        recorded = parse_json(baseline.structure_fp)
        patch = structure.json_patch(recorded, parse_json(current.structure_fp))
        if patch:
            return Diff.of(DiffKind.STRUCTURE, {"run_id": c.run_id, "step_id": c.step_id, "patch": patch,
                                                "before": structure.patch_before(recorded, patch),
                                                "envelope": envelope}), NO_CHANGES  # fmt: skip
    return None, NO_CHANGES
