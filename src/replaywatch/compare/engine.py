"""The comparison of a step's baseline attempt with a newer attempt.

Rules (from the reference replay executor, as the engine issue states them):
usage numbers and tolerance (``usage``), structure (``structure``), attestation ids
(``attestations``), tool events, and the verdict by precedence
``attestation_divergence`` > ``tool_event_divergence`` > ``drift`` >
``within_tolerance``. Every field is computed whatever the verdict.

An attempt is *prepared* once (usage numbers found, structure fingerprinted) so that
the per-event work of the stream is one preparation plus a constant-time comparison;
the JSON Patch of a structural change is built only when the structure differs.
"""

from __future__ import annotations

import enum
import math
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple

from replaywatch import native
from replaywatch.compare import attestations, structure, tool_changes, usage
from replaywatch.compare import usage as usage_presets
from replaywatch.compare.canonical import Json, canonical_bytes, compact_bytes, parse_json, sha256_hex
from replaywatch.compare.graded import PathComparators, PathResult, graded, structure_score
from replaywatch.compare.ids import uuid5_text
from replaywatch.compare.ignore import IgnoreRules
from replaywatch.compare.tool_changes import NO_CHANGES, ToolCounts
from replaywatch.compare.trajectory import MODES, SAME, Mode, Trajectory, trajectory
from replaywatch.compare.usage import UsagePreset
from replaywatch.exceptions import ConfigError

if TYPE_CHECKING:
    from replaywatch.compare.policy import PolicyRule


class Verdict(enum.StrEnum):
    WITHIN_TOLERANCE = "within_tolerance"
    DRIFT = "drift"
    ATTESTATION_DIVERGENCE = "attestation_divergence"
    TOOL_EVENT_DIVERGENCE = "tool_event_divergence"


CHANGED_PATHS: Final = 5


class DiffKind(enum.StrEnum):
    ATTESTATION = "replay_attestation_diff"
    TOOL = "replay_tool_diff"
    STRUCTURE = "replay_structure_diff"


class _Absent:
    """Tool events that an attempt does not carry (unlike JSON null, which it does)."""

    _instance: _Absent | None = None

    def __new__(cls) -> _Absent:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ABSENT"

    def __reduce__(self) -> str:
        return "ABSENT"


ABSENT: Final = _Absent()

ComparisonBase = Literal["first", "previous"]


@dataclass(frozen=True, slots=True)
class CompareConfig:
    """The settings a comparison runs under: tolerances, ignore rules, the usage preset
    and the comparison base, named by the policy they come from. Validated on
    construction.

    ``rules`` (policies, ``compare.policy``) override these settings for the attempts
    they match: ``select`` gives the settings of one attempt; with no rules, these."""

    tokens_tolerance: float = 0.0
    cost_tolerance: float = 0.0
    ignore: IgnoreRules = field(default_factory=IgnoreRules)
    base: ComparisonBase = "first"
    usage: UsagePreset = usage_presets.REFERENCE
    policy: str = "default"
    """The name of the policy these settings are (on the events they make)."""
    rules: tuple[PolicyRule, ...] = ()
    comparators: PathComparators = field(default_factory=PathComparators)
    """Comparators by path of the output snapshot (``graded``): none, exact equality."""
    tool_mode: Mode = "strict"
    """How tool calls must match the baseline's (``trajectory``)."""
    latency_tolerance: float | None = None
    """Relative latency change allowed (0.5: 50%); None: latency is not compared."""
    adaptive: bool = False
    """After a cohort's warm-up, its learned envelope decides (``envelope``)."""
    prep_key: str = field(init=False, compare=False)
    """What ``prepare`` depends on (usage preset, ignore rules): an attempt prepared
    under other settings is prepared again before it is compared under these."""
    settings_fingerprint: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("tokens_tolerance", "cost_tolerance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite number >= 0 (a fraction: 0.01 is 1%), got {value!r}")
        if self.base not in ("first", "previous"):
            raise ConfigError(f"comparison base must be 'first' or 'previous', got {self.base!r}")
        if self.latency_tolerance is not None and (
            isinstance(self.latency_tolerance, bool)
            or not isinstance(self.latency_tolerance, (int, float))
            or not math.isfinite(self.latency_tolerance)
            or self.latency_tolerance < 0
        ):
            raise ConfigError(f"latency_tolerance must be a finite number >= 0, got {self.latency_tolerance!r}")
        if self.tool_mode not in MODES:
            raise ConfigError(f"tool mode must be one of {', '.join(MODES)}, got {self.tool_mode!r}")
        object.__setattr__(self, "prep_key", "\x1f".join((self.usage.name, *self.ignore.paths)))
        object.__setattr__(self, "settings_fingerprint", self.fingerprint())

    @classmethod
    def build(
        cls,
        tokens_tolerance: float = 0.0,
        cost_tolerance: float = 0.0,
        ignore: tuple[str, ...] | list[str] = (),
        base: str = "first",
        usage: str = "reference",
        policy: str = "default",
    ) -> CompareConfig:
        return cls(tokens_tolerance, cost_tolerance, IgnoreRules.compile(ignore), base,  # type: ignore[arg-type]
                   usage_presets.preset(usage), policy)  # fmt: skip

    def select(self, provider: str | None, provider_version: str | None, step_id: str) -> CompareConfig:
        """The settings of an attempt: those of the first policy rule that matches it,
        else these (the default policy)."""
        for rule in self.rules:
            if rule.matches(provider, provider_version, step_id):
                return rule.config
        return self

    @property
    def any_adaptive(self) -> bool:
        """Whether this policy or one of its rules is adaptive (envelopes are kept)."""
        return self.adaptive or any(r.config.adaptive for r in self.rules)

    def fingerprint(self) -> str:
        """What names these settings on the events they make: the first 16 hex digits of
        the sha256 of their canonical JSON (tolerances, ignore rules in order, base, the
        usage preset unless it is the reference's, and the policy rules if any). The
        policy's name is not a setting: renaming a policy changes no fingerprint."""
        settings: dict[str, Any] = {
            "tokens_tolerance": float(self.tokens_tolerance),
            "cost_tolerance": float(self.cost_tolerance),
            "ignore": list(self.ignore.paths),
            "base": self.base,
        }
        if self.usage is not usage_presets.REFERENCE:
            settings["usage"] = self.usage.name
        if self.comparators.paths:
            settings["comparators"] = self.comparators.describe()
        if self.tool_mode != "strict":
            settings["tool_mode"] = self.tool_mode
        if self.latency_tolerance is not None:
            settings["latency_tolerance"] = float(self.latency_tolerance)
        if self.adaptive:
            settings["adaptive"] = True
        if self.rules:
            settings["rules"] = [rule.describe() for rule in self.rules]
        return sha256_hex(canonical_bytes(settings))[:16]


class Attempt(NamedTuple):
    """One attempt of one step, as its event reports it (JSON already parsed).

    ``output_snapshot`` is None when the attempt carries none; ``tool_events`` is
    ABSENT when the attempt carries none (JSON null is a value, not absence).
    """

    run_id: str
    step_id: str
    number: int
    """The attempt number (the contract's ``attempt``)."""
    output_snapshot: Json = None
    tool_events: Json = ABSENT
    event_id: str = ""
    status: str = "succeeded"
    occurred_at_ms: int = 0
    provider: str | None = None
    """The model provider the event names, if any (policies match it; a metric attribute)."""
    provider_version: str | None = None
    latency_ms: float | None = None
    """How long the attempt took, as its event says (``latency_ms``), if it says."""
    kind: str | None = None
    """The step's kind, as its ``spec_snapshot`` names it (cohorts; read only when
    envelopes are on)."""


class PreparedAttempt(NamedTuple):
    """What a comparison needs of one attempt. Built once by ``prepare``.

    Everything is held as bytes, not as parsed JSON: a step's pair stays in the step
    cache for as long as the step lives, and bytes take a sixth of the memory of the
    parsed objects and are invisible to the cyclic garbage collector, whose pauses over
    cached snapshots made the latency tail. The compared forms are parsed again from
    their fingerprints only when two fingerprints differ.

    Hot-path values are NamedTuples: immutable plain data like a frozen dataclass,
    but built several times faster (a frozen dataclass sets each field through
    ``object.__setattr__``), which shows in the per-event budget.
    """

    number: int
    """The attempt number."""
    snapshot_json: bytes
    """The output snapshot, compact JSON with keys in their order (what is stored)."""
    tools_json: bytes | None
    """The tool events, compact JSON; None when the attempt carries none."""
    tokens: float | None
    cost: float | None
    attestation_ids: tuple[str, ...]
    structure_fp: bytes
    """Canonical bytes of the output structure that is compared (usage and ignored paths out)."""
    tool_fp: bytes | None
    """Canonical bytes of the tool events that are compared (ignored paths out)."""
    prepared_with: str = ""
    """The ``prep_key`` of the settings it was prepared under."""
    ignored: int = 0
    """The ignore rules that matched something in it: bit ``n`` is rule ``n``."""
    latency_ms: float | None = None

    @property
    def output_snapshot(self) -> Json:
        return parse_json(self.snapshot_json)

    @property
    def tool_events(self) -> Json:
        return ABSENT if self.tools_json is None else parse_json(self.tools_json)


@dataclass(frozen=True, slots=True)
class Diff:
    """A diff object: its canonical bytes are what is stored, its sha256 its name."""

    kind: DiffKind
    body: bytes
    sha256: str

    @classmethod
    def of(cls, kind: DiffKind, payload: dict[str, Any]) -> Diff:
        body = canonical_bytes(payload)
        return cls(kind, body, sha256_hex(body))


class Comparison(NamedTuple):
    """The result of comparing a step's base attempt with a current attempt."""

    run_id: str
    step_id: str
    baseline_attempt: int
    current_attempt: int
    verdict: Verdict
    token_delta: float | None
    cost_delta: float | None
    tokens_within: bool
    cost_within: bool
    structure_equal: bool
    tool_events_equal: bool
    missing_attestations: tuple[str, ...]
    unexpected_attestations: tuple[str, ...]
    tokens_tolerance: float
    cost_tolerance: float
    diff: Diff | None
    tool_changes: ToolCounts = NO_CHANGES
    """Tool events added, removed, moved and changed (zeros when they are equal)."""
    policy: str = "default"
    settings_fingerprint: str = ""
    ignored: int = 0
    """The ignore rules of the policy that matched something in either attempt (bits)."""
    structure_score: float = 1.0
    """The lowest score of the paths that differ under the policy's comparators (1: none
    differs; with no comparators, 1 or 0)."""
    paths: tuple[PathResult, ...] = ()
    """Each path that differs, with its comparator, score and whether it passed."""
    tools: Trajectory = SAME
    """How the tool calls matched the baseline's under the policy's mode."""
    latency: tuple[float | None, float | None] = (None, None)
    """(the base attempt's latency, the current one's), in ms, when the events say."""
    latency_within: bool = True
    latency_tolerance: float | None = None
    regime: str | None = None
    """Who decided the verdict under an adaptive policy: ``warmup`` (the configured
    rules, while the cohort's envelope learns) or ``adaptive`` (the envelope); None
    when the policy is not adaptive."""
    cohort: str | None = None
    crossings: tuple[Any, ...] = ()
    """How the comparison fell outside its cohort's envelope (``envelope.Crossing``)."""
    changed_paths: tuple[str, ...] = ()
    """The first paths of the structure diff's patch (at most ``CHANGED_PATHS``)."""

    @property
    def latency_delta(self) -> float | None:
        return usage.delta(*self.latency)

    @property
    def deciding_paths(self) -> tuple[str, ...]:
        """The paths that failed their comparator: what made the structure drift."""
        return tuple(r.path for r in self.paths if not r.passed)

    @property
    def event_id(self) -> str:
        return comparison_id(self.run_id, self.step_id, self.baseline_attempt, self.current_attempt)

    def summary(self) -> dict[str, Any]:
        """The comparison as plain JSON-ready data (what the CLI prints)."""
        return {
            "event_id": self.event_id,
            "verdict": self.verdict.value,
            "run_id": self.run_id,
            "step_id": self.step_id,
            "baseline_attempt": self.baseline_attempt,
            "current_attempt": self.current_attempt,
            "token_delta": self.token_delta,
            "cost_delta": self.cost_delta,
            "tokens_within": self.tokens_within,
            "cost_within": self.cost_within,
            "structure_equal": self.structure_equal,
            "tool_events_equal": self.tool_events_equal,
            "tool_changes": self.tool_changes._asdict(),
            "missing_attestations": list(self.missing_attestations),
            "unexpected_attestations": list(self.unexpected_attestations),
            "tolerance_tokens": self.tokens_tolerance,
            "tolerance_cost": self.cost_tolerance,
            "policy": self.policy,
            "settings_fingerprint": self.settings_fingerprint,
            "structure_score": self.structure_score,
            "paths": [r.describe() for r in self.paths],
            "tool_precision": self.tools.precision,
            "tool_recall": self.tools.recall,
            "tools_added": list(self.tools.added_tools),
            "latency_ms": list(self.latency),
            "latency_delta": self.latency_delta,
            "latency_within": self.latency_within,
            "diff_kind": self.diff.kind.value if self.diff else None,
            "diff_sha256": self.diff.sha256 if self.diff else None,
            "regime": self.regime,
            "cohort": self.cohort,
            "envelopes_crossed": [c.describe() for c in self.crossings],
        }


_ID_NAMESPACE: Final = uuid.UUID("5b1c2d3e-8f4a-4b6c-9d0e-7a1b2c3d4e5f")


@lru_cache(maxsize=8192)
def comparison_id(run_id: str, step_id: str, baseline_attempt: int, current_attempt: int) -> str:
    """Deterministic event id: the same pair of attempts always gets the same id.
    Cached: a comparison's id is read by the encoder, the history row and telemetry."""
    name = f"{run_id}\x1f{step_id}\x1f{baseline_attempt}\x1f{current_attempt}"
    return uuid5_text(_ID_NAMESPACE, name)


def _fingerprint(value: Json) -> bytes:
    """The canonical bytes themselves: comparing them is cheaper than hashing them,
    and the snapshot is held anyway."""
    return canonical_bytes(value)


def prepare(
    attempt: int, output_snapshot: Json, tool_events: Json, config: CompareConfig, latency_ms: float | None = None
) -> PreparedAttempt:
    """Find usage numbers and fingerprint the structure and tool events of one attempt.

    Fingerprints hash the canonical bytes without normalizing numbers, so equal
    fingerprints mean equal structures; unequal ones are confirmed by value in
    ``compare`` (``1`` and ``1.0`` differ in bytes, not in value).

    The snapshot and tool events may come as ``native.Document``s (JSON read natively,
    ``codec.parse_attempt(documents=True)``): then the walks and the bytes are made
    natively, to the same values (``structure.walk_documents``).
    """
    rules = config.ignore
    if native.is_document(output_snapshot) or native.is_document(tool_events):
        walked = structure.walk_documents(output_snapshot, None if tool_events is ABSENT else tool_events,
                                          config.usage, rules, config.prep_key)  # fmt: skip
        if walked is not None:
            return PreparedAttempt(attempt, walked.snapshot_json, walked.tools_json, walked.tokens, walked.cost,
                                   walked.attestation_ids, walked.structure_fp, walked.tool_fp, config.prep_key,
                                   walked.ignored, latency_ms)  # fmt: skip
        output_snapshot, tool_events = native.value(output_snapshot), native.value(tool_events)
    ignored = 0
    if rules.output:
        stripped, tokens, cost, matched = structure.strip_and_drop(output_snapshot, config.usage, rules.output)
        ignored = rules.rules_of(matched, "output")
    else:
        stripped, tokens, cost = structure.strip_usage(output_snapshot, config.usage)
    tool_fp = tools_json = None
    if tool_events is not ABSENT:
        if rules.tools:
            kept, matched = structure.drop_ignored(tool_events, rules.tools)
            ignored |= rules.rules_of(matched, "tools")
            tool_fp = _fingerprint(kept)
            tools_json = compact_bytes(tool_events)
        else:  # what is compared is all of it: one copy serves both
            tool_fp = tools_json = _fingerprint(tool_events)
    structure_fp = _fingerprint(stripped)
    snapshot_json = compact_bytes(output_snapshot)
    return PreparedAttempt(
        number=attempt,
        snapshot_json=snapshot_json,
        tools_json=tools_json,
        tokens=tokens,
        cost=cost,
        attestation_ids=attestations.extract(output_snapshot),
        structure_fp=structure_fp,
        tool_fp=tool_fp,
        prepared_with=config.prep_key,
        ignored=ignored,
        latency_ms=latency_ms,
    )


UNPREPARED: Final = "\x00"
"""The ``prepared_with`` of an attempt kept without its compared forms: it matches no
settings' ``prep_key``, so ``prepared_under`` prepares it again before it is compared."""


def unprepared(attempt: PreparedAttempt) -> PreparedAttempt:
    """The attempt as it is stored, without what ``prepare`` finds in it (fingerprints,
    usage numbers, attestation ids): what a step keeps of an attempt it is not expected
    to compare again, about half the memory. The stored row is written from what it
    keeps; ``prepared_under`` prepares it again, to the same values, should it be
    compared after all."""
    return _kept(attempt.number, attempt.snapshot_json, attempt.tools_json, attempt.latency_ms)


def stored(attempt: int, output_snapshot: Json, tool_events: Json, latency_ms: float | None = None) -> PreparedAttempt:
    """An attempt read back from storage and not prepared: ``unprepared`` of what
    ``prepare`` would make of it, without the work."""
    tools_json = None if tool_events is ABSENT else compact_bytes(tool_events)
    return _kept(attempt, compact_bytes(output_snapshot), tools_json, latency_ms)


def _kept(number: int, snapshot_json: bytes, tools_json: bytes | None, latency_ms: float | None) -> PreparedAttempt:
    return PreparedAttempt(number, snapshot_json, tools_json, None, None, (), b"", None, UNPREPARED, 0, latency_ms)


def prepared_under(attempt: PreparedAttempt, config: CompareConfig) -> PreparedAttempt:
    """The attempt as ``config`` prepares it: itself, or prepared again when it was
    prepared under another usage preset or other ignore rules (another policy)."""
    if attempt.prepared_with == config.prep_key:
        return attempt
    return prepare(attempt.number, attempt.output_snapshot, attempt.tool_events, config, attempt.latency_ms)


class _Structure(NamedTuple):
    """How the output structures compare: equal (or every difference passed), the
    patch from one to the other, and under comparators each path that differs."""

    equal: bool
    recorded: Json = None
    patch: list[dict[str, Any]] = []
    score: float = 1.0
    paths: tuple[PathResult, ...] = ()


_SAME: Final = _Structure(True)


def _structure(baseline: PreparedAttempt, current: PreparedAttempt, config: CompareConfig) -> _Structure:
    """Only walked when the fingerprints differ. Without comparators, one walk both
    decides equality by value (``1`` and ``1.0`` differ in bytes) and builds the patch a
    drift needs; with them, each differing path is scored (``graded``), and the patch is
    built only when a path failed (a passing structure stores no diff)."""
    if baseline.structure_fp == current.structure_fp:
        return _SAME
    recorded, now = parse_json(baseline.structure_fp), parse_json(current.structure_fp)
    if not config.comparators:
        patch = structure.json_patch(recorded, now)
        return _Structure(not patch, recorded, patch, 0.0 if patch else 1.0)
    paths = tuple(graded(recorded, now, config.comparators))
    passed = all(r.passed for r in paths)
    patch = [] if passed else structure.json_patch(recorded, now)
    return _Structure(passed, recorded, patch, structure_score(list(paths)), paths)


def _tools_equal(baseline: PreparedAttempt, current: PreparedAttempt) -> bool:
    if baseline.tool_fp == current.tool_fp:
        return True
    if baseline.tool_fp is None or current.tool_fp is None:
        return False
    return structure.same(parse_json(baseline.tool_fp), parse_json(current.tool_fp))


def _compared_tools(attempt: PreparedAttempt) -> Json:
    return None if attempt.tool_fp is None else parse_json(attempt.tool_fp)


def compare(
    run_id: str,
    step_id: str,
    baseline: PreparedAttempt,
    current: PreparedAttempt,
    config: CompareConfig,
    lean: bool = False,
) -> Comparison:
    """Compare a prepared baseline with a prepared current attempt. Pure.

    ``lean``: for a comparison that a cohort's envelope decides (``envelope.adaptive``):
    usage, latency and attestations as ever, the structures and tool events equal or
    not by their fingerprints, and no comparator, trajectory, patch or change list (the
    envelope builds what its verdict needs)."""
    if lean:
        return _lean(run_id, step_id, baseline, current, config)
    token_delta = usage.delta(baseline.tokens, current.tokens)
    cost_delta = usage.delta(baseline.cost, current.cost)
    tokens_within = usage.within_tolerance(token_delta, baseline.tokens, config.tokens_tolerance)
    cost_within = usage.within_tolerance(cost_delta, baseline.cost, config.cost_tolerance)
    latency_within = config.latency_tolerance is None or usage.within_tolerance(
        usage.delta(baseline.latency_ms, current.latency_ms), baseline.latency_ms, config.latency_tolerance
    )
    shape = _structure(baseline, current, config)
    structure_equal = shape.equal
    in_order = _tools_equal(baseline, current)
    calls = SAME if in_order else trajectory(_compared_tools(baseline), _compared_tools(current), config.tool_mode,
                                             in_order=False, calls=config.comparators.calls)  # fmt: skip
    tools_equal = calls.passed
    if baseline.attestation_ids == current.attestation_ids:
        missing: tuple[str, ...] = ()
        unexpected: tuple[str, ...] = ()
    else:
        missing, unexpected = attestations.diff(baseline.attestation_ids, current.attestation_ids)

    changes: list[dict[str, Any]] = []
    if not in_order:  # the changes as compared: ignore rules applied
        changes = tool_changes.classify(_compared_tools(baseline), _compared_tools(current))

    diff: Diff | None
    if missing or unexpected:
        verdict = Verdict.ATTESTATION_DIVERGENCE
        diff = Diff.of(
            DiffKind.ATTESTATION,
            {
                "run_id": run_id,
                "step_id": step_id,
                "recorded": list(baseline.attestation_ids),
                "current": list(current.attestation_ids),
                "missing": list(missing),
                "unexpected": list(unexpected),
            },
        )
    elif not tools_equal:
        verdict = Verdict.TOOL_EVENT_DIVERGENCE
        payload = {
            "run_id": run_id,
            "step_id": step_id,
            "recorded": None if baseline.tool_events is ABSENT else baseline.tool_events,
            "current": None if current.tool_events is ABSENT else current.tool_events,
            "changes": changes,
        }
        if config.tool_mode != "strict":  # (a strict diff keeps the bytes, and so the name, it always had)
            payload |= {"mode": config.tool_mode, "precision": calls.precision, "recall": calls.recall,
                        "tools_added": list(calls.added_tools)}  # fmt: skip
        diff = Diff.of(DiffKind.TOOL, payload)
    elif not (tokens_within and cost_within and structure_equal and latency_within):
        verdict = Verdict.DRIFT
        diff = None
        if not structure_equal:
            payload = {"run_id": run_id, "step_id": step_id, "patch": shape.patch,
                       "before": structure.patch_before(shape.recorded, shape.patch)}  # fmt: skip
            if shape.paths:
                payload["paths"] = [r.describe() for r in shape.paths]
            diff = Diff.of(DiffKind.STRUCTURE, payload)
    else:
        verdict = Verdict.WITHIN_TOLERANCE
        diff = None

    return Comparison(
        run_id=run_id,
        step_id=step_id,
        baseline_attempt=baseline.number,
        current_attempt=current.number,
        verdict=verdict,
        token_delta=token_delta,
        cost_delta=cost_delta,
        tokens_within=tokens_within,
        cost_within=cost_within,
        structure_equal=structure_equal,
        tool_events_equal=tools_equal,
        missing_attestations=missing,
        unexpected_attestations=unexpected,
        tokens_tolerance=config.tokens_tolerance,
        cost_tolerance=config.cost_tolerance,
        diff=diff,
        tool_changes=tool_changes.counts(changes) if changes else tool_changes.NO_CHANGES,
        policy=config.policy,
        settings_fingerprint=config.settings_fingerprint,
        ignored=baseline.ignored | current.ignored,
        structure_score=shape.score,
        paths=shape.paths,
        tools=calls,
        latency=(baseline.latency_ms, current.latency_ms),
        latency_within=latency_within,
        latency_tolerance=config.latency_tolerance,
        changed_paths=() if structure_equal else tuple(op.get("path") or "/" for op in shape.patch[:CHANGED_PATHS]),
    )


def _lean(
    run_id: str, step_id: str, baseline: PreparedAttempt, current: PreparedAttempt, config: CompareConfig
) -> Comparison:
    token_delta = usage.delta(baseline.tokens, current.tokens)
    cost_delta = usage.delta(baseline.cost, current.cost)
    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    if baseline.attestation_ids != current.attestation_ids:
        missing, unexpected = attestations.diff(baseline.attestation_ids, current.attestation_ids)
    diff = None
    verdict = Verdict.WITHIN_TOLERANCE
    if missing or unexpected:
        verdict = Verdict.ATTESTATION_DIVERGENCE
        diff = Diff.of(DiffKind.ATTESTATION, {"run_id": run_id, "step_id": step_id,
                                              "recorded": list(baseline.attestation_ids),
                                              "current": list(current.attestation_ids), "missing": list(missing),
                                              "unexpected": list(unexpected)})  # fmt: skip
    structure_equal = baseline.structure_fp == current.structure_fp
    return Comparison(
        run_id, step_id, baseline.number, current.number, verdict, token_delta, cost_delta,
        usage.within_tolerance(token_delta, baseline.tokens, config.tokens_tolerance),
        usage.within_tolerance(cost_delta, baseline.cost, config.cost_tolerance),
        structure_equal, baseline.tool_fp == current.tool_fp, missing, unexpected, config.tokens_tolerance,
        config.cost_tolerance, diff, policy=config.policy, settings_fingerprint=config.settings_fingerprint,
        ignored=baseline.ignored | current.ignored, structure_score=1.0 if structure_equal else 0.0,
        latency=(baseline.latency_ms, current.latency_ms), latency_tolerance=config.latency_tolerance,
    )  # fmt: skip


def compare_attempts(baseline: Attempt, current: Attempt, config: CompareConfig) -> Comparison:
    """Prepare two attempts and compare them under the settings of the current attempt's
    policy (for the CLI and tests)."""
    config = config.select(current.provider, current.provider_version, current.step_id)
    return compare(
        baseline.run_id,
        baseline.step_id,
        prepare(baseline.number, baseline.output_snapshot, baseline.tool_events, config, baseline.latency_ms),
        prepare(current.number, current.output_snapshot, current.tool_events, config, current.latency_ms),
        config,
    )
