"""``replaywatch compare --explain``: a comparison in a few lines a person reads.

Which rule decided the verdict (by the precedence attestation ids > tool events >
drift > within tolerance), which policy and tolerances applied, which paths differ,
and which ignore rules matched. Pure: plain strings from plain data.
"""

from __future__ import annotations

from replaywatch.compare import structure, tool_changes
from replaywatch.compare.canonical import parse_json
from replaywatch.compare.engine import CompareConfig, Comparison, PreparedAttempt, Verdict
from replaywatch.compare.graded import PathResult

MAX_PATHS = 10


def _usage_line(what: str, base: float | None, cur: float | None, delta: float | None, tolerance: float,
                within: bool) -> str:  # fmt: skip
    if delta is None:
        side = (
            "neither attempt has"
            if base is None and cur is None
            else ("the base attempt has no" if base is None else "the current attempt has no")
        )
        return f"{what}: not compared ({side} {what} under this usage preset)"
    change = f"{base:g} -> {cur:g} ({delta:+g}"
    change += f", {delta / base:+.2%})" if base else ")"
    rule = f"tolerance {tolerance:g} {'relative to the base' if base else 'absolute (the base is 0)'}"
    return f"{what}: {change}; {rule}: {'within' if within else 'OUTSIDE'}"


def _paths(patch: list[dict[str, object]]) -> str:
    paths = [str(op["path"]) or "(the whole document)" for op in patch]
    more = f" and {len(paths) - MAX_PATHS} more" if len(paths) > MAX_PATHS else ""
    return ", ".join(paths[:MAX_PATHS]) + more


def path_line(r: PathResult) -> str:
    """One graded path in words: where, by which comparator, its score against the
    threshold, and the verdict (``--explain``, ``replaywatch diff``)."""
    verdict = "passed" if r.passed else "FAILED: decides the drift"
    detail = ""
    if r.detail:
        detail = "; " + ", ".join(f"{k} {v!r}" for k, v in sorted(r.detail.items()) if v not in (None, [], {}))
    where = r.path or "(the whole snapshot)"
    return f"{where}: {r.comparator} {r.score:.2f} ({r.rule}): {verdict}{detail}"


def decided_by(c: Comparison) -> str:
    """The rule that decided the verdict, in words."""
    if c.verdict is Verdict.ATTESTATION_DIVERGENCE:
        return "attestation ids differ (this rule comes first)"
    if c.verdict is Verdict.TOOL_EVENT_DIVERGENCE:
        return "tool events differ (attestation ids are equal)"
    if c.verdict is Verdict.DRIFT:
        rules = (("tokens", c.tokens_within), ("cost", c.cost_within), ("latency", c.latency_within),
                 ("structure", c.structure_equal))  # fmt: skip
        why = [name for name, ok in rules if not ok]
        paths = f" at {', '.join(c.deciding_paths[:MAX_PATHS])}" if c.deciding_paths else ""
        return f"drift in {', '.join(why)}{paths} (attestation ids and tool events are equal)"
    return "every rule holds: attestation ids, tool events, tokens, cost and structure"


def explain(c: Comparison, baseline: PreparedAttempt, current: PreparedAttempt, config: CompareConfig) -> list[str]:
    """The lines of ``--explain`` for comparison ``c`` of these prepared attempts under
    ``config`` (the policy that applied)."""
    lines = [
        f"verdict: {c.verdict.value}: {decided_by(c)}",
        f"policy: {c.policy} (settings {c.settings_fingerprint}; usage preset {config.usage.name}; "
        f"comparison base {config.base})",
        _usage_line("tokens", baseline.tokens, current.tokens, c.token_delta, c.tokens_tolerance, c.tokens_within),
        _usage_line("cost", baseline.cost, current.cost, c.cost_delta, c.cost_tolerance, c.cost_within),
    ]
    if c.latency_tolerance is not None:
        base_ms, cur_ms = c.latency
        lines.append(_usage_line("latency_ms", base_ms, cur_ms, c.latency_delta, c.latency_tolerance, c.latency_within))
    if c.paths:
        state = "passes its comparators" if c.structure_equal else "drifts"
        lines.append(f"structure {state} (score {c.structure_score:.2f}, the lowest path's); per path:")
        lines += [f"  {path_line(r)}" for r in c.paths[:MAX_PATHS]]
        if len(c.paths) > MAX_PATHS:
            lines.append(f"  and {len(c.paths) - MAX_PATHS} more")
    elif c.structure_equal:
        lines.append("structure: equal (usage keys and ignored paths left out)")
    else:
        patch = structure.json_patch(parse_json(baseline.structure_fp), parse_json(current.structure_fp))
        lines.append(f"structure differs at: {_paths(patch)}")
    if c.tool_events_equal:
        lines.append("tool events: equal")
    else:
        rec = None if baseline.tool_fp is None else parse_json(baseline.tool_fp)
        cur = None if current.tool_fp is None else parse_json(current.tool_fp)
        lines.append("tool events differ:")
        lines += [f"  {line}" for line in tool_changes.describe(tool_changes.classify(rec, cur))]
    if c.missing_attestations or c.unexpected_attestations:
        lines.append(f"attestation ids: missing {list(c.missing_attestations)}, "
                     f"unexpected {list(c.unexpected_attestations)}")  # fmt: skip
    else:
        lines.append("attestation ids: the same set")
    for n, path in enumerate(config.ignore.paths):
        matched = "matched" if c.ignored >> n & 1 else "matched nothing"
        lines.append(f"ignore rule {path!r}: {matched}")
    return lines
