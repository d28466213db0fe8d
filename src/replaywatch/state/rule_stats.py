"""Ignore rules that report themselves: how often each rule matched.

A mistyped ignore rule matches nothing and says nothing; these counts say it. For each
policy's rules: the comparisons made under the policy, and those in which the rule
left something out of either attempt. One warning when a rule has matched nothing in
its first ``WARN_AFTER`` comparisons. The counts go to a metric
(``replaywatch.ignore_rule.matches``) and to PostgreSQL for ``replaywatch report
--rules``. Plain data, no IO: the pipeline feeds it committed comparisons.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Final

from replaywatch.compare import CompareConfig, Comparison

WARN_AFTER: Final = 1000

RuleKey = tuple[str, str]
"""(policy, ignore path)."""
Row = tuple[str, str, int, int]
"""(policy, ignore path, comparisons, matches)."""


def counted(rules: dict[str, tuple[str, ...]], comparisons: Iterable[Comparison]) -> dict[RuleKey, list[int]]:
    """(comparisons, matches) of each rule of ``rules`` (ignore paths by policy) in
    ``comparisons``. They mostly share a policy and a mask of rules matched: counted by
    those, not one by one."""
    out: dict[RuleKey, list[int]] = {}
    for (policy, ignored), k in Counter((c.policy, c.ignored) for c in comparisons).items():
        for n, path in enumerate(rules.get(policy, ())):
            counts = out.setdefault((policy, path), [0, 0])
            counts[0] += k
            counts[1] += k if ignored >> n & 1 else 0
    return out


class IgnoreRuleStats:
    def __init__(self, config: CompareConfig, warn_after: int = WARN_AFTER) -> None:
        self.rules: dict[str, tuple[str, ...]] = {config.policy: config.ignore.paths}
        self.rules.update((r.name, r.config.ignore.paths) for r in config.rules)
        self.warn_after = warn_after
        self.totals: dict[RuleKey, list[int]] = {}
        """(comparisons, matches) of each rule since start."""
        self.pending: dict[RuleKey, list[int]] = {}
        """Counted and not yet stored (``take``)."""
        self._warned: set[RuleKey] = set()

    def observe(self, comparisons: Iterable[Comparison]) -> tuple[list[Row], list[str]]:
        """Count committed comparisons. Returns their counts, as (policy, rule,
        comparisons, matches), and the warnings now due (each rule's once)."""
        rows = [(policy, rule, n, m) for (policy, rule), (n, m) in counted(self.rules, comparisons).items()]
        warnings = []
        for policy, rule, n, m in rows:
            key = (policy, rule)
            total = self.totals.setdefault(key, [0, 0])
            before = total[0]
            total[0] += n
            total[1] += m
            if before < self.warn_after <= total[0] and total[1] == 0 and key not in self._warned:
                self._warned.add(key)
                warnings.append(
                    f"ignore rule {rule!r} of policy {policy!r} matched nothing in its first "
                    f"{self.warn_after} comparisons: check its path against the events "
                    "(replaywatch report --rules lists every rule's matches)"
                )
        self.give_back(rows)
        return rows, warnings

    def take(self) -> list[Row]:
        """The counts not yet stored, as (policy, rule, comparisons, matches); forgotten
        here (``give_back`` when storing them failed)."""
        out = [(policy, rule, c, m) for (policy, rule), (c, m) in self.pending.items()]
        self.pending = {}
        return out

    def give_back(self, rows: list[Row]) -> None:
        """Count these again as not stored."""
        for policy, rule, c, m in rows:
            counts = self.pending.setdefault((policy, rule), [0, 0])
            counts[0] += c
            counts[1] += m
