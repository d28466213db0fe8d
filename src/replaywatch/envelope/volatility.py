"""The flakiness of each cohort, from its envelopes (merged over input partitions), and
a policy that would have kept its false alerts under a target. Pure.

- *flake rate*: the share of the cohort's re-runs that differed at all, ids and clocks
  aside (paths that differ in every re-run);
- the paths that vary most, with the share of re-runs in which each differs;
- *pass^k*: the chance that ``k`` re-runs in a row all come out the same under exact
  equality, ``(1 - flake rate)^k``.

``suggest`` writes a policy rule per cohort from what its envelope learned: each path
that differs in more than the target share of re-runs gets a comparator whose threshold
the learned distribution passes at all but that share (``words`` for texts, ``number``
for numbers, ``set`` for lists whose set holds, ``ignore`` for ids and clocks), and the
usage tolerances their learned quantile. The target is shared out over the paths, so
that the rule as a whole stays under it on the history seen.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

from replaywatch.envelope.model import CohortEnvelope
from replaywatch.envelope.observe import OTHER, TOOLS

ALWAYS: Final = 0.98
"""A path that differs in this share of re-runs or more is an id or a clock."""


class Volatility(NamedTuple):
    cohort: str
    envelope: CohortEnvelope
    """The cohort's envelopes of every partition, merged."""
    partitions: int

    @property
    def flake_rate(self) -> float:
        return self.envelope.flaky / self.envelope.seen if self.envelope.seen else 0.0

    @property
    def alert_rate(self) -> float:
        return self.envelope.crossed / self.envelope.seen if self.envelope.seen else 0.0

    def pass_k(self, k: int) -> float:
        return (1.0 - self.flake_rate) ** k

    def top_paths(self, n: int = 3, always: bool = False) -> list[tuple[str, float]]:
        """The ``n`` paths that differ most often, with the share of re-runs; ids and
        clocks (paths that differ in nearly every re-run) aside unless ``always``."""
        env = self.envelope
        rates = sorted(((env.rate(p), p) for p in env.paths), key=lambda x: (-x[0], x[1]))
        return [(p, r) for r, p in rates if always or r < ALWAYS][:n]


def by_cohort(envelopes: Mapping[tuple[int, str], CohortEnvelope]) -> list[Volatility]:
    """Each cohort's envelopes merged over partitions, the flakiest first."""
    merged: dict[str, tuple[CohortEnvelope, int]] = {}
    for (_, cohort), env in sorted(envelopes.items()):
        if cohort in merged:
            have, n = merged[cohort]
            merged[cohort] = (have.merge(env), n + 1)
        else:
            merged[cohort] = (env, 1)
    out = [Volatility(c, e, n) for c, (e, n) in merged.items()]
    out.sort(key=lambda v: (-v.flake_rate, v.cohort))
    return out


def policy_path(pointer: str) -> str:
    """A JSON Pointer of an envelope (``/choices/*/message/content``) as a policy path
    (``output_snapshot.choices[*].message.content``; ``tool_events[*]...`` for tools)."""
    if pointer.startswith(TOOLS):
        head, rest = "tool_events", pointer[len(TOOLS) :]
    else:
        head, rest = "output_snapshot", pointer
    out = head
    for token in rest.split("/")[1:]:
        key = token.replace("~1", "/").replace("~0", "~")
        if key == "*":
            out += "[*]"
        elif not key or any(ch in key for ch in '.[]"*') or key.isdigit():
            out += '["' + key.replace('"', '\\"') + '"]'
        else:
            out += f".{key}"
    return out


def _ceil(value: float, digits: int = 3) -> float:
    scale = 10**digits
    return float(math.ceil(value * scale - 1e-9) / scale)


def suggest(v: Volatility, target: float = 0.02) -> dict[str, Any]:
    """A policy rule (as a policy file's ``[[rules]]`` table) for cohort ``v``: see the module."""
    env = v.envelope
    n = max(env.learned, 1)
    varying = [(p, s) for p, s in sorted(env.paths.items()) if p != OTHER and s.differs / n > target]
    share = target / max(len(varying) + 3, 1)  # the paths, and tokens, cost and latency
    per_mille = max(1, int(share * 1000))
    compare: dict[str, Any] = {}
    for pointer, stats in varying:
        path = policy_path(pointer)
        if stats.scores is not None and stats.set_changes:
            compare[path] = {"kind": "set", "threshold": max(0.0, _floor(stats.scores.low(per_mille) or 0.0))}
        elif stats.scores is not None:
            compare[path] = {"kind": "words", "threshold": max(0.0, _floor(stats.scores.low(per_mille) or 0.0))}
        elif stats.deltas is not None:
            compare[path] = {"kind": "number", "rel": _ceil(stats.deltas.high(per_mille) or 0.0)}
        elif stats.reorders and not stats.shape_changes:
            compare[path] = "set"
        else:
            compare[path] = "ignore"
    provider, version, kind = [*v.cohort.split("|"), "-", "-", "-"][:3]
    rule: dict[str, Any] = {"name": "-".join(x for x in (provider, version, kind) if x != "-") or "cohort"}
    if provider != "-":
        rule["provider"] = provider
    if version != "-":
        rule["provider_version"] = version
    for name, setting in (("tokens", "tokens_tolerance"), ("cost", "cost_tolerance"),
                          ("latency", "latency_tolerance")):  # fmt: skip
        hist = env.usage[name]
        if hist.total:
            rule[setting] = _ceil(hist.high(per_mille) or 0.0)
    if compare:
        rule["compare"] = compare
    return rule


def _floor(value: float, digits: int = 3) -> float:
    scale = 10**digits
    return float(math.floor(value * scale + 1e-9) / scale)


def toml_rule(rule: dict[str, Any], comment: str) -> str:
    """The rule as TOML, to paste under a policy file's rules."""
    lines = [f"# {comment}", "[[rules]]"]
    for key, value in rule.items():
        if key != "compare":
            lines.append(f"{key} = {_toml(value)}")
    if "compare" in rule:
        lines.append("[rules.compare]")
        lines += [f"{_toml(path)} = {_toml(c)}" for path, c in rule["compare"].items()]
    return "\n".join(lines) + "\n"


def _toml(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return repr(value)
