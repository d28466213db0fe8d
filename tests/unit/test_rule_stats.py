"""Ignore rules that report themselves."""

from __future__ import annotations

from replaywatch.compare import CompareConfig, compare_attempts
from replaywatch.compare import policy as policies
from replaywatch.compare.engine import Attempt, Comparison
from replaywatch.state.rule_stats import IgnoreRuleStats

RULES = ["output_snapshot.meta.request_id", "output_snapshot.meta.requestid", "tool_events[*].trace", "**.clock"]
CONFIG = CompareConfig.build(ignore=RULES)


def comparison(n: int, config: CompareConfig = CONFIG, provider: str | None = None) -> Comparison:
    snap = {"meta": {"request_id": f"req-{n}"}, "answer": 42}
    tools = [{"tool": "t", "trace": n}] if n % 2 else [{"tool": "t"}]
    return compare_attempts(Attempt("r", "s", 1, snap, tool_events=tools, provider=provider),
                            Attempt("r", "s", 2, snap | {"clock": n} if n % 3 == 0 else snap, tool_events=tools,
                                    provider=provider), config)  # fmt: skip


def test_each_rule_counts_the_comparisons_it_matched_in() -> None:
    stats = IgnoreRuleStats(CONFIG)
    rows, _ = stats.observe(comparison(n) for n in range(12))
    assert {(rule, c, m) for _, rule, c, m in rows} == {
        (RULES[0], 12, 12),  # in every snapshot
        (RULES[1], 12, 0),  # mistyped
        (RULES[2], 12, 6),  # odd n carry a trace
        (RULES[3], 12, 4),  # n = 0, 3, 6, 9
    }
    assert stats.take() == [("default", r, c, m) for _, r, c, m in rows]
    assert stats.take() == []


def test_a_rule_that_matched_nothing_in_its_first_thousand_comparisons_warns_once() -> None:
    stats = IgnoreRuleStats(CONFIG, warn_after=10)
    _, warnings = stats.observe(comparison(n) for n in range(9))
    assert warnings == []
    _, warnings = stats.observe(comparison(n) for n in range(9, 20))
    assert warnings == [
        "ignore rule 'output_snapshot.meta.requestid' of policy 'default' matched nothing in its first 10 "
        "comparisons: check its path against the events (replaywatch report --rules lists every rule's matches)"
    ]
    assert stats.observe(comparison(n) for n in range(20, 40))[1] == []


def test_a_rule_that_matched_late_but_within_the_first_comparisons_does_not_warn() -> None:
    stats = IgnoreRuleStats(CompareConfig.build(ignore=["**.clock"]), warn_after=10)
    warnings = [w for n in (1, 2, 3) for w in stats.observe([comparison(n)])[1]]  # n = 3 has a clock
    warnings += [w for n in range(4, 30) if n % 3 for w in stats.observe([comparison(n)])[1]]
    assert warnings == []


def test_counts_are_kept_per_policy() -> None:
    config = policies.parse({"rules": [{"name": "p", "provider": "x", "ignore": ["**.clock"]}]}, CONFIG)
    stats = IgnoreRuleStats(config)
    rows, _ = stats.observe([comparison(3, config, "x"), comparison(3, config), comparison(1, config, "x")])
    assert ("p", "**.clock", 2, 1) in rows and ("default", "**.clock", 1, 1) in rows


def test_counts_not_stored_are_given_back() -> None:
    stats = IgnoreRuleStats(CONFIG)
    stats.observe([comparison(1)])
    rows = stats.take()
    stats.give_back(rows)
    stats.observe([comparison(1)])
    assert {r: (c, m) for _, r, c, m in stats.take()}[RULES[0]] == (2, 2)
