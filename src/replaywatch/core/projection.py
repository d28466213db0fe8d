"""Per-step state, and how one attempt event changes it. Pure: no IO, no clock.

A step's projection keeps a *pair* of prepared attempts, the comparison base and the
current attempt, and nothing else of the attempt history, so its size is bounded
whatever the number of retries:

- base ``first`` (the reference): base = the lowest-numbered attempt with an output
  snapshot, current = the highest-numbered one. A later attempt is compared with the
  base, so the current is kept without its compared forms (``unprepared``: half its
  memory), made again only when an earlier attempt arrives late;
- base ``previous`` (shadow mode): current = the highest-numbered one, base = the
  highest-numbered one below it.

An event emits one comparison exactly when it changes the pair and the pair holds two
different attempts. Attempts arrive in any order and more than once: a duplicate, or
a late attempt that changes neither end of the pair, changes nothing and emits
nothing. So the final pair, and its verdict, equal the batch comparison over the set
of distinct attempts (``replay_step``), whatever the order of arrival.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple, Protocol

from replaywatch.compare import Attempt, CompareConfig, Comparison, PreparedAttempt, compare, compare_attempts, prepare
from replaywatch.compare.engine import Verdict, prepared_under, unprepared
from replaywatch.exceptions import MissingOutputSnapshots

MISSING_SNAPSHOTS = "missing output snapshots; cannot run mocked replay"


class StepProjection(NamedTuple):
    """One step's state: the (baseline, current) pair and a little bookkeeping."""

    run_id: str
    step_id: str
    baseline: PreparedAttempt | None = None
    current: PreparedAttempt | None = None
    max_attempt: int = -1
    """Highest attempt number seen, with or without a snapshot."""
    last_status: str | None = None
    last_verdict: Verdict | None = None
    comparisons: int = 0
    version: int = 0
    """The version of the step's stored row once this projection is committed (0: no
    row). Not part of the rules: the store writes a step only from the version it read."""

    @classmethod
    def empty(cls, run_id: str, step_id: str) -> StepProjection:
        return cls(run_id, step_id)

    @property
    def has_snapshot(self) -> bool:
        return self.current is not None


def _next_pair(proj: StepProjection, n: int, config: CompareConfig) -> tuple[int, int] | None:
    """The (baseline, current) attempt numbers after attempt ``n`` arrives, or None when
    the pair does not change."""
    baseline, current = proj.baseline, proj.current
    if baseline is None or current is None:
        return n, n
    if n in (baseline.number, current.number):
        return None
    if config.base == "first":
        if n < baseline.number:
            return n, current.number
        if n > current.number:
            return baseline.number, n
        return None
    # previous: baseline is the highest attempt below current
    if n > current.number:
        return current.number, n
    if baseline.number == current.number or n > baseline.number:
        return n, current.number
    return None


class Judge(Protocol):
    """What judges a comparison again before it is said (an adaptive policy's envelope,
    ``envelope.adaptive``)."""

    def decides(self, config: CompareConfig) -> bool:
        """Whether it alone decides under ``config`` (the engine may compare lean)."""
        ...

    def __call__(
        self, c: Comparison, baseline: PreparedAttempt, current: PreparedAttempt, config: CompareConfig
    ) -> Comparison: ...


def apply(
    proj: StepProjection, event: Attempt, config: CompareConfig, judge: Judge | None = None
) -> tuple[StepProjection, tuple[Comparison, ...]]:
    """Apply one attempt event under the settings of its policy (``config.select``).
    Returns the new projection and the comparisons it causes (none or one). Applying
    an event twice changes nothing the second time.

    The arriving attempt's policy decides for the pair: a step whose attempts name
    other providers is compared under the policy of the attempt that changed the pair,
    its other attempt prepared again under it if need be (``prepared_under``).
    ``judge``: judges the comparison again (``envelope.adaptive``); its verdict is the step's."""
    config = config.select(event.provider, event.provider_version, event.step_id)
    max_attempt = max(proj.max_attempt, event.number)
    last_status = event.status if event.number > proj.max_attempt else proj.last_status
    run_id, step_id = proj.run_id, proj.step_id
    # each outcome is built once: StepProjection(...) costs a third of a _replace
    pair = None if event.output_snapshot is None else _next_pair(proj, event.number, config)
    if pair is None:
        return StepProjection(run_id, step_id, proj.baseline, proj.current, max_attempt, last_status,
                              proj.last_verdict, proj.comparisons, proj.version), ()  # fmt: skip

    arrived = prepare(event.number, event.output_snapshot, event.tool_events, config, event.latency_ms)
    known = {p.number: p for p in (proj.baseline, proj.current) if p is not None}
    known[event.number] = arrived
    baseline, current = prepared_under(known[pair[0]], config), prepared_under(known[pair[1]], config)
    if baseline.number == current.number:
        return StepProjection(run_id, step_id, baseline, current, max_attempt, last_status, Verdict.WITHIN_TOLERANCE,
                              proj.comparisons, proj.version), ()  # fmt: skip
    if judge is None:
        comparison = compare(run_id, step_id, baseline, current, config)
    else:
        comparison = judge(compare(run_id, step_id, baseline, current, config, judge.decides(config)), baseline,
                           current, config)  # fmt: skip
    # the base "first" compares the next attempt with this baseline, not with this
    # current: the step keeps the current without its compared forms (made again
    # should an earlier attempt arrive late and be compared with it)
    kept = unprepared(current) if config.base == "first" else current
    new = StepProjection(run_id, step_id, baseline, kept, max_attempt, last_status, comparison.verdict,
                         proj.comparisons + 1, proj.version)  # fmt: skip
    return new, (comparison,)


def replay_step(attempts: Iterable[Attempt], config: CompareConfig) -> Comparison:
    """The batch oracle: compare a step's attempts as the reference does, all at once.

    Raises MissingOutputSnapshots when no attempt carries an output snapshot.
    """
    with_snapshot: dict[int, Attempt] = {}
    step_id = "?"
    for a in attempts:
        step_id = a.step_id
        if a.output_snapshot is not None:
            with_snapshot.setdefault(a.number, a)
    if not with_snapshot:
        raise MissingOutputSnapshots(f"step {step_id} {MISSING_SNAPSHOTS}")
    numbers = sorted(with_snapshot)
    current = with_snapshot[numbers[-1]]
    config = config.select(current.provider, current.provider_version, current.step_id)
    if config.base == "first":
        baseline = with_snapshot[numbers[0]]
    else:
        baseline = with_snapshot[numbers[-2]] if len(numbers) > 1 else current
    return compare_attempts(baseline, current, config)
